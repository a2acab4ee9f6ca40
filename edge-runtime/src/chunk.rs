//! Action chunks on the control loop's clock.
//!
//! A policy answers an observation taken at control tick `t` with `k` actions, one every `1/fps`
//! seconds from that instant. The loop runs faster than the policy's fps (30–100 Hz against the
//! data's 10), so action `i` covers ticks `[t + i·r, t + (i+1)·r)` with `r = rate / fps`, and the
//! command between two actions is interpolated linearly; the last action is held over its own
//! interval, never beyond it. Chunks overlap (the next is requested before the current one ends),
//! and where they do the commands are blended with exponential weights by age, newest first
//! (temporal ensembling; LeRobot's async inference merges 0.3·old + 0.7·new, which is a decay of
//! 0.85 here). A tick no chunk covers gets no action: the loop holds instead of replaying.

use lapa_boards::Joints;
use std::collections::VecDeque;

/// One chunk of absolute joint targets.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    /// Sequence number given by the inference thread.
    pub id: u32,
    /// The control tick whose measured state the policy saw; action 0 is for this tick.
    pub start_tick: u64,
    /// Control ticks per action (loop rate / policy fps), > 0.
    pub ticks_per_action: f64,
    pub actions: Vec<Joints>,
}

impl Chunk {
    /// First tick after the chunk's last action interval.
    pub fn end_tick(&self) -> f64 {
        self.start_tick as f64 + self.actions.len() as f64 * self.ticks_per_action
    }

    /// The command for `tick`, or `None` outside the chunk.
    pub fn at(&self, tick: u64) -> Option<Joints> {
        if tick < self.start_tick || self.ticks_per_action.is_nan() || self.ticks_per_action <= 0.0 {
            return None;
        }
        let pos = (tick - self.start_tick) as f64 / self.ticks_per_action;
        let i = pos.floor() as usize;
        let a = *self.actions.get(i)?;
        let Some(b) = self.actions.get(i + 1) else { return Some(a) };
        let f = (pos - i as f64) as f32;
        Some(std::array::from_fn(|j| a[j] + (b[j] - a[j]) * f))
    }
}

/// A command blended from the chunks that cover a tick.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Blended {
    pub action: Joints,
    /// The newest chunk that contributed.
    pub chunk: u32,
    /// How many chunks contributed.
    pub sources: u8,
}

/// The chunks the loop is executing, oldest first.
#[derive(Debug, Clone)]
pub struct ChunkQueue {
    chunks: VecDeque<Chunk>,
    /// Ensembling decay `m`: chunk weights are `exp(−m·k)`, `k = 0` for the newest. 0 averages
    /// equally; large values follow the newest chunk only.
    decay: f32,
    /// Chunks kept at most (older ones are dropped first).
    max_chunks: usize,
}

impl ChunkQueue {
    pub fn new(decay: f32, max_chunks: usize) -> Self {
        Self { chunks: VecDeque::new(), decay: decay.max(0.0), max_chunks: max_chunks.max(1) }
    }

    /// Adds a chunk that arrived from the policy. Returns false (and drops it) when it ends before
    /// `now`: it arrived too late to contribute anything.
    pub fn push(&mut self, chunk: Chunk, now: u64) -> bool {
        if chunk.actions.is_empty() || chunk.end_tick() <= now as f64 {
            return false;
        }
        self.chunks.push_back(chunk);
        while self.chunks.len() > self.max_chunks {
            self.chunks.pop_front();
        }
        true
    }

    /// Drops chunks that end at or before `tick`.
    pub fn prune(&mut self, tick: u64) {
        self.chunks.retain(|c| c.end_tick() > tick as f64);
    }

    /// The blended command for `tick` (pruning what has ended), `None` when nothing covers it.
    pub fn action_at(&mut self, tick: u64) -> Option<Blended> {
        self.prune(tick);
        let mut sum = [0.0f64; lapa_boards::so101::JOINTS];
        let mut total = 0.0f64;
        let mut newest = None;
        let mut sources = 0u8;
        for (k, c) in self.chunks.iter().rev().enumerate() {
            let Some(a) = c.at(tick) else { continue };
            let w = lapa_model::policy::ensemble_weight(self.decay, k);
            for (s, v) in sum.iter_mut().zip(a) {
                *s += w * f64::from(v);
            }
            total += w;
            newest.get_or_insert(c.id);
            sources = sources.saturating_add(1);
        }
        let chunk = newest?;
        Some(Blended { action: sum.map(|s| (s / total) as f32), chunk, sources })
    }

    /// Ticks from `tick` until the newest chunk ends (0 when empty).
    pub fn remaining(&self, tick: u64) -> f64 {
        self.chunks.back().map_or(0.0, |c| (c.end_tick() - tick as f64).max(0.0))
    }

    pub fn len(&self) -> usize {
        self.chunks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    pub fn clear(&mut self) {
        self.chunks.clear();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn chunk(id: u32, start: u64, values: &[f32]) -> Chunk {
        Chunk { id, start_tick: start, ticks_per_action: 5.0, actions: values.iter().map(|&v| [v; 6]).collect() }
    }

    #[test]
    fn interpolates_between_actions_and_holds_the_last_only_over_its_interval() {
        let c = chunk(1, 100, &[0.0, 10.0, 20.0]);
        assert_eq!(c.at(99), None);
        assert_eq!(c.at(100), Some([0.0; 6]));
        assert_eq!(c.at(102), Some([4.0; 6]));
        assert_eq!(c.at(105), Some([10.0; 6]));
        assert_eq!(c.at(110), Some([20.0; 6]));
        assert_eq!(c.at(114), Some([20.0; 6]));
        assert_eq!(c.at(115), None, "no action past the chunk: the loop must hold, not replay");
        assert_eq!(c.end_tick(), 115.0);
    }

    #[test]
    fn overlapping_chunks_blend_newest_first_and_stale_ones_are_refused() {
        let mut q = ChunkQueue::new(0.85, 4);
        assert!(q.push(chunk(1, 0, &[0.0, 0.0, 0.0, 0.0]), 0));
        assert!(q.push(chunk(2, 10, &[10.0, 10.0, 10.0]), 10));
        let b = q.action_at(12).unwrap();
        assert_eq!((b.chunk, b.sources), (2, 2));
        let w = (-0.85f64).exp();
        let want = (10.0 / (1.0 + w)) as f32;
        assert!((b.action[0] - want).abs() < 1e-5, "{} vs {want}", b.action[0]);
        assert!((want - 7.0).abs() < 0.05, "0.85 reproduces LeRobot's 0.3/0.7 merge");
        // Chunk 1 ends at tick 20; after it only chunk 2 counts.
        assert_eq!(q.action_at(20).unwrap(), Blended { action: [10.0; 6], chunk: 2, sources: 1 });
        assert_eq!(q.len(), 1);
        assert_eq!(q.remaining(20), 5.0);
        assert_eq!(q.action_at(25), None);
        assert!(q.is_empty());
        // A chunk that ended before it arrived is dropped.
        assert!(!q.push(chunk(3, 0, &[1.0]), 30));
        assert!(q.is_empty());
    }

    #[test]
    fn zero_decay_averages_and_the_queue_is_bounded() {
        let mut q = ChunkQueue::new(0.0, 2);
        q.push(chunk(1, 0, &[0.0; 8]), 0);
        q.push(chunk(2, 0, &[6.0; 8]), 0);
        q.push(chunk(3, 0, &[3.0; 8]), 0);
        assert_eq!(q.len(), 2);
        let b = q.action_at(1).unwrap();
        assert_eq!((b.action[3], b.chunk, b.sources), (4.5, 3, 2));
    }
}
