"""Shared by the bench table scripts."""
import math


def wilson(k, n, z=1.96):
    """95% Wilson interval of k successes in n trials (the eval reports' own)."""
    if n == 0:
        return [0.0, 1.0]
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return [max(0.0, c - h), min(1.0, c + h)]
