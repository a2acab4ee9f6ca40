//! all-MiniLM-L6-v2 in burn against sentence-transformers' own embeddings (numbers produced once
//! with Python: tests/data/minilm_make_reference.py) — ids exact, embeddings within 1e-4.
//!
//! Needs the encoder's files: scripts/test.sh fetches them (scripts/fetch-minilm.sh).

use lapa_model::text::{SentenceEncoder, TextConfig, minilm_dir};

#[derive(serde::Deserialize)]
struct Sentence {
    text: String,
    ids: Vec<u32>,
    embedding: Vec<f32>,
}

#[derive(serde::Deserialize)]
struct Reference {
    sentences: Vec<Sentence>,
}

fn encoder() -> SentenceEncoder {
    let dir = minilm_dir();
    let device = lapa_model::device("cpu").expect("cpu");
    SentenceEncoder::load(&dir, &TextConfig::minilm(), &device)
        .unwrap_or_else(|e| panic!("{e} — the text encoder's files are fetched by scripts/fetch-minilm.sh (scripts/test.sh runs it)"))
}

#[test]
fn embeddings_match_sentence_transformers() {
    let r: Reference = serde_json::from_str(include_str!("data/minilm_reference.json")).expect("reference");
    let mut enc = encoder();
    let texts: Vec<&str> = r.sentences.iter().map(|s| s.text.as_str()).collect();
    // One padded batch, as the reference was made, then one at a time from a fresh cache.
    let batch = enc.embed(&texts).expect("embed");
    let mut single = encoder();
    for (i, s) in r.sentences.iter().enumerate() {
        assert_eq!(enc.ids(&s.text).expect("ids"), s.ids, "{:?}", s.text);
        let one = single.embed(&[&s.text]).expect("embed one").remove(0);
        for got in [&batch[i], &one] {
            let max = got.iter().zip(&s.embedding).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            assert!(max < 1e-4, "{:?}: max difference {max} from sentence-transformers", s.text);
        }
        let norm: f32 = one.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
    }
    // Not vacuous: different sentences are far apart, paraphrases closer.
    let cos = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
    let e = enc.embed(&["push the red cube to the left", "slide the red cube leftwards", "stop"]).expect("embed");
    assert!(cos(&e[0], &e[1]) > cos(&e[0], &e[2]) + 0.2, "paraphrase {} vs unrelated {}", cos(&e[0], &e[1]), cos(&e[0], &e[2]));
    // Longer than the encoder takes: an error naming the limit, not a silent truncation.
    let long = "push the cube ".repeat(100);
    assert!(enc.embed(&[&long]).is_err_and(|e| e.to_string().contains("at most 256")));
}
