//! Fixtures the compression tests share: a seeded generator, an action head, and a model whose
//! every weight comes from a seed.

use burn::module::Module;
use burn::tensor::{Tensor, TensorData};
use lapa_model::bins::QuantileBins;
use lapa_model::burn;
use lapa_model::policy::ActionSpec;
use lapa_model::vla::{ActionHeadConfig, ActionTarget, HeadConfig, Vla, VlaConfig};

/// A deterministic generator (xorshift), values in [-1, 1).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.next() * scale).collect()
    }
}

/// An action head of `dims` joints in degrees, `chunk` actions, `bins` bins over ±100.
pub fn head(dims: usize, chunk: usize, bins: usize, target: ActionTarget) -> HeadConfig {
    let names: Vec<String> = (0..dims).map(|i| format!("j{i}")).collect();
    let units = vec!["deg".to_string(); dims];
    let line: Vec<f32> = (0..400).map(|i| i as f32 * 0.5 - 100.0).collect();
    let edges = vec![QuantileBins::fit(&line, bins).expect("bins"); dims];
    HeadConfig::Action(ActionHeadConfig { spec: ActionSpec { names, units, fps: 10.0, chunk }, target, bins, edges })
}

pub fn device() -> burn::tensor::Device {
    lapa_model::device("cpu").expect("cpu")
}

/// A model whose every weight comes from `seed` (burn's own initialisation draws from a global
/// generator that tests running in parallel share): matrices uniform in ±1/√rows, vectors at their
/// fresh value rounded (1 for gains, 0 for offsets and biases) plus noise in ±0.3.
pub fn model(cfg: &VlaConfig, seed: u64) -> Vla {
    struct Reseed(Rng);
    impl burn::module::ModuleMapper for Reseed {
        fn map_float<const D: usize>(&mut self, param: burn::module::Param<Tensor<D>>) -> burn::module::Param<Tensor<D>> {
            let rng = &mut self.0;
            param.map(|t| {
                let dims = t.dims();
                let n = dims.iter().product::<usize>();
                let device = t.device();
                if D == 1 {
                    t.round() + Tensor::<D>::from_data(TensorData::new(rng.vec(n, 0.3), dims), &device)
                } else {
                    Tensor::<D>::from_data(TensorData::new(rng.vec(n, (1.0 / (dims[0] as f32).sqrt()).min(0.5)), dims), &device)
                }
            })
        }
    }
    cfg.init(&device()).expect("init").map(&mut Reseed(Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)))
}
