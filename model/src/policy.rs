//! The policy interface of the runtime: one observation in, one chunk of future actions out.
//!
//! Every policy the board can run implements [`Policy`]: the burn module of the latent VLA, the
//! int8 policy of `lapa-compress`, a remote policy served from a workstation, and the simulator's
//! scripted expert (sim only). The edge runtime's control loop knows nothing else about them. The
//! types here hold no tensors, so the trait costs a consumer nothing but this module.

/// What a policy's actions mean. Read from the model bundle, never hard-coded downstream.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionSpec {
    /// One name per action dimension, in the arm's motor order (LeRobot's `<joint>.pos`
    /// features without the suffix).
    pub names: Vec<String>,
    /// Unit of each dimension (`"deg"`, `"%"`), as the arm description names them.
    pub units: Vec<String>,
    /// Rate of the actions within a chunk (the training data's fps).
    pub fps: f32,
    /// Actions per chunk (1 reproduces LAPA's single-step head).
    pub chunk: usize,
}

impl ActionSpec {
    /// Checks the fields against each other; the first problem is named.
    pub fn validate(&self) -> Result<(), PolicyError> {
        if self.names.is_empty() {
            return Err(PolicyError::Spec("names: no action dimensions".into()));
        }
        if self.units.len() != self.names.len() {
            return Err(PolicyError::Spec(format!("units: {} entries for {} names", self.units.len(), self.names.len())));
        }
        if !(self.fps.is_finite() && self.fps > 0.0 && self.fps <= 1000.0) {
            return Err(PolicyError::Spec(format!("fps: {} is not in (0, 1000]", self.fps)));
        }
        if self.chunk == 0 || self.chunk > 1024 {
            return Err(PolicyError::Spec(format!("chunk: {} is not in 1..=1024", self.chunk)));
        }
        Ok(())
    }
}

/// One camera frame, packed RGB, row-major.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    pub width: usize,
    pub height: usize,
    pub rgb: &'a [u8],
}

/// What a policy sees at one instant.
#[derive(Debug, Clone, Copy)]
pub struct PolicyInput<'a> {
    pub frame: Frame<'a>,
    /// Measured joint state in joint units (motor order). Policies trained without
    /// proprioception ignore it.
    pub state: &'a [f32],
    pub instruction: &'a str,
    /// Seconds since the run started at which `state` was measured (policies that keep an
    /// internal clock, such as the simulator's expert, use it; learned policies ignore it).
    pub time_s: f64,
}

/// Why a policy produced no actions.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PolicyError {
    #[error("action spec: {0}")]
    Spec(String),
    #[error("input: {0}")]
    Input(String),
    #[error("policy backend: {0}")]
    Backend(String),
    #[error("remote policy: {0}")]
    Remote(String),
}

/// A policy: observation → a chunk of [`ActionSpec::chunk`] absolute actions, the first for the
/// observation's instant and one every `1 / fps` after it.
pub trait Policy: Send {
    fn action_spec(&self) -> &ActionSpec;

    /// Short description for logs (`"burn small (cpu)"`, `"remote ws://…"`).
    fn describe(&self) -> String;

    /// Computes the chunk. Each inner vector has one value per [`ActionSpec::names`].
    fn infer(&mut self, input: &PolicyInput<'_>) -> Result<Vec<Vec<f32>>, PolicyError>;

    /// Clears any per-episode state (a new instruction, a new episode).
    fn reset(&mut self) {}
}

/// Checks a chunk a policy returned against its spec: length, width, finiteness. A remote or
/// buggy policy's output is outside input like any other.
pub fn check_chunk(spec: &ActionSpec, chunk: &[Vec<f32>]) -> Result<(), PolicyError> {
    if chunk.is_empty() || chunk.len() > spec.chunk {
        return Err(PolicyError::Backend(format!("returned {} actions, the spec allows 1..={}", chunk.len(), spec.chunk)));
    }
    for (i, a) in chunk.iter().enumerate() {
        if a.len() != spec.names.len() {
            return Err(PolicyError::Backend(format!("action {i} has {} values, the spec names {}", a.len(), spec.names.len())));
        }
        if let Some((d, v)) = a.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            let name = spec.names.get(d).map_or("?", String::as_str);
            return Err(PolicyError::Backend(format!("action {i}, {name}: {v} is not finite")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ActionSpec {
        ActionSpec { names: vec!["a".into(), "b".into()], units: vec!["deg".into(), "%".into()], fps: 10.0, chunk: 4 }
    }

    #[test]
    fn spec_and_chunks_are_checked_field_by_field() {
        assert_eq!(spec().validate(), Ok(()));
        let bad = ActionSpec { fps: 0.0, ..spec() };
        assert!(bad.validate().is_err_and(|e| e.to_string().contains("fps")));
        let bad = ActionSpec { units: vec![], ..spec() };
        assert!(bad.validate().is_err_and(|e| e.to_string().contains("units")));
        let bad = ActionSpec { chunk: 0, ..spec() };
        assert!(bad.validate().is_err_and(|e| e.to_string().contains("chunk")));
        assert_eq!(check_chunk(&spec(), &[vec![1.0, 2.0]]), Ok(()));
        assert!(check_chunk(&spec(), &[]).is_err());
        assert!(check_chunk(&spec(), &vec![vec![0.0, 0.0]; 5]).is_err());
        assert!(check_chunk(&spec(), &[vec![0.0]]).is_err_and(|e| e.to_string().contains("1 values")));
        assert!(check_chunk(&spec(), &[vec![0.0, f32::NAN]]).is_err_and(|e| e.to_string().contains("b: NaN")));
    }
}
