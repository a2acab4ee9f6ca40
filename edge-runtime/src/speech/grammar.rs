//! The spoken vocabulary: instruction templates with slots (`put the {block} in the {corner}
//! corner`), the JSGF grammar the recogniser decodes with, and the parser that reads a sentence
//! back into its task and slot values.
//!
//! The default vocabulary is the simulator's own: its six task families' templates and
//! paraphrases and its colours, shapes, sides and corners ([`Vocabulary::sim`]), so the grammar
//! can never drift from the instructions the policy was trained on. A user's own tasks come from
//! a TOML file ([`Vocabulary::load`]).

use super::SpeechError;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// What "stop" may be said as: one short word. Always in the grammar, whatever the vocabulary;
/// routed to the e-stop. (Longer stop phrases made short out-of-vocabulary sentences decode as
/// stops; a stop is also taken only from a short utterance, see [`super::recognize::STOP_MAX_MS`].)
pub const STOP_PHRASES: [&str; 3] = ["stop", "halt", "freeze"];

/// Lower case, letters, digits and apostrophes only, single spaces.
pub fn normalize(text: &str) -> String {
    let t: String = text.chars().map(|c| if c.is_alphanumeric() || c == '\'' { c.to_ascii_lowercase() } else { ' ' }).collect();
    t.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Whether `text` is one of the [`STOP_PHRASES`].
pub fn is_stop(text: &str) -> bool {
    let t = normalize(text);
    STOP_PHRASES.contains(&t.as_str())
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String),
    Slot(String),
}

/// One instruction template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// The task it names (templates of one task are paraphrases of each other).
    pub task: String,
    pub text: String,
    tokens: Vec<Token>,
}

/// A sentence read back: which template, its task, and the slot values in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub template: usize,
    pub task: String,
    pub slots: Vec<(String, String)>,
}

impl Parsed {
    /// Two sentences mean the same thing: same task, same slot values. The order of the values
    /// is not part of the meaning ("separate the red square from the blue circle" and "pull the
    /// blue circle and the red square apart" name one task; the simulator's success checks are
    /// symmetric in their objects).
    pub fn same_meaning(&self, other: &Parsed) -> bool {
        let sorted = |p: &Parsed| {
            let mut v = p.slots.clone();
            v.sort();
            v
        };
        self.task == other.task && sorted(self) == sorted(other)
    }
}

/// Templates and slot values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vocabulary {
    pub templates: Vec<Template>,
    /// Slot name → its values (each a phrase of one or more words).
    pub slots: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTemplate {
    task: String,
    text: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VocabularyFile {
    templates: Vec<FileTemplate>,
    #[serde(default)]
    slots: BTreeMap<String, Vec<String>>,
}

/// Most templates and values a vocabulary may hold (the grammar stays small enough to decode fast).
pub const MAX_TEMPLATES: usize = 512;
pub const MAX_SLOT_VALUES: usize = 256;
/// Most words and slots in one template.
pub const MAX_TEMPLATE_TOKENS: usize = 48;

impl Vocabulary {
    /// Builds and checks a vocabulary: every `{slot}` a template names has values, slot names are
    /// lower-case words, nothing is empty.
    pub fn new(templates: Vec<(String, String)>, slots: BTreeMap<String, Vec<String>>) -> Result<Self, String> {
        if templates.is_empty() {
            return Err("no templates".into());
        }
        if templates.len() > MAX_TEMPLATES {
            return Err(format!("{} templates; at most {MAX_TEMPLATES}", templates.len()));
        }
        let mut clean_slots = BTreeMap::new();
        for (name, values) in slots {
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                return Err(format!("slot name {name:?}: use lower-case letters and _"));
            }
            if values.is_empty() || values.len() > MAX_SLOT_VALUES {
                return Err(format!("slot {name:?} has {} values; 1 to {MAX_SLOT_VALUES}", values.len()));
            }
            let mut vs: Vec<String> = Vec::new();
            for v in values.iter() {
                let n = normalize(v);
                if n.is_empty() {
                    return Err(format!("slot {name:?}: value {v:?} has no words"));
                }
                if n.split(' ').count() > 8 {
                    return Err(format!("slot {name:?}: value {v:?} is longer than 8 words"));
                }
                if !vs.contains(&n) {
                    vs.push(n);
                }
            }
            clean_slots.insert(name, vs);
        }
        let mut out = Vec::new();
        for (i, (task, text)) in templates.into_iter().enumerate() {
            let tokens = tokenize(&text).map_err(|e| format!("template {} ({text:?}): {e}", i + 1))?;
            if tokens.is_empty() {
                return Err(format!("template {} is empty", i + 1));
            }
            if tokens.len() > MAX_TEMPLATE_TOKENS {
                return Err(format!("template {} ({text:?}) has {} words and slots; at most {MAX_TEMPLATE_TOKENS}", i + 1, tokens.len()));
            }
            for t in &tokens {
                if let Token::Slot(s) = t
                    && !clean_slots.contains_key(s)
                {
                    return Err(format!("template {} ({text:?}) names slot {{{s}}}, which has no values", i + 1));
                }
            }
            if task.trim().is_empty() {
                return Err(format!("template {} ({text:?}) has no task", i + 1));
            }
            out.push(Template { task: task.trim().to_string(), text, tokens });
        }
        Ok(Self { templates: out, slots: clean_slots })
    }

    /// Reads a vocabulary file:
    /// ```toml
    /// templates = [
    ///   { task = "pick_place", text = "put the {block} in the {corner} corner" },
    /// ]
    /// [slots]
    /// block = ["red square", "blue circle"]
    /// corner = ["top left", "top right"]
    /// ```
    pub fn load(path: &Path) -> Result<Self, SpeechError> {
        let err = |message: String| SpeechError::Vocabulary { path: path.to_path_buf(), message };
        let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
        let f: VocabularyFile = toml::from_str(&text).map_err(|e| err(e.to_string()))?;
        Self::new(f.templates.into_iter().map(|t| (t.task, t.text)).collect(), f.slots).map_err(err)
    }

    /// The simulator's vocabulary: every task family's templates (the unseen-instructions
    /// paraphrase included: a user may say any of them) over every colour, shape, side and corner.
    pub fn sim() -> Self {
        use lapa_sim::TaskFamily;
        use lapa_sim::task::{Corner, Side};
        use lapa_sim::world::{Colour, Shape};
        let mut templates = Vec::new();
        for f in TaskFamily::ALL {
            let place = if f == TaskFamily::PickPlace { "{corner}" } else { "{side}" };
            for t in f.templates() {
                let t = t.replace("{a}", "{block}").replace("{b}", "{block}").replace("{c}", "{block}").replace("{where}", place);
                templates.push((f.name().to_string(), t));
            }
        }
        let block = Colour::ALL.iter().flat_map(|c| Shape::ALL.iter().map(move |s| format!("{} {}", c.name(), s.name()))).collect();
        let slots = BTreeMap::from([
            ("block".to_string(), block),
            ("side".to_string(), Side::ALL.iter().map(|s| s.name().to_string()).collect()),
            ("corner".to_string(), Corner::ALL.iter().map(|c| c.name().to_string()).collect()),
        ]);
        #[allow(clippy::expect_used)]
        Self::new(templates, slots).expect("the simulator's templates name only its own slots")
    }

    /// Every word the grammar can produce (the recogniser's dictionary must know each).
    pub fn words(&self) -> BTreeSet<String> {
        let mut w: BTreeSet<String> = STOP_PHRASES.iter().flat_map(|p| p.split(' ')).map(str::to_string).collect();
        for t in &self.templates {
            for tok in &t.tokens {
                if let Token::Word(x) = tok {
                    w.insert(x.clone());
                }
            }
        }
        for vs in self.slots.values() {
            w.extend(vs.iter().flat_map(|v| v.split(' ')).map(str::to_string));
        }
        w
    }

    /// The grammar in JSGF: `stop` phrases and every template, slots as alternatives.
    pub fn jsgf(&self) -> String {
        let mut g = String::from("#JSGF V1.0;\ngrammar lapa;\npublic <utterance> = <stop> | <instruction>;\n");
        g += &format!("<stop> = {};\n", STOP_PHRASES.join(" | "));
        let alts: Vec<String> = (0..self.templates.len()).map(|i| format!("<t{i}>")).collect();
        g += &format!("<instruction> = {};\n", alts.join(" | "));
        for (i, t) in self.templates.iter().enumerate() {
            let body: Vec<String> = t
                .tokens
                .iter()
                .map(|tok| match tok {
                    Token::Word(w) => w.clone(),
                    Token::Slot(s) => format!("<slot_{s}>"),
                })
                .collect();
            g += &format!("<t{i}> = {};\n", body.join(" "));
        }
        for (name, values) in &self.slots {
            g += &format!("<slot_{name}> = {};\n", values.join(" | "));
        }
        g
    }

    /// Reads `text` back as one of the templates (the first that matches).
    pub fn parse(&self, text: &str) -> Option<Parsed> {
        let norm = normalize(text);
        let words: Vec<&str> = norm.split(' ').filter(|w| !w.is_empty()).collect();
        self.templates.iter().enumerate().find_map(|(i, t)| {
            let mut slots = Vec::new();
            let mut failed = std::collections::HashSet::new();
            self.match_tokens(&t.tokens, 0, &words, 0, &mut slots, &mut failed).then(|| Parsed { template: i, task: t.task.clone(), slots })
        })
    }

    /// Matches `tokens[ti..]` against `words[wi..]`. Whether a (token, word) position can finish
    /// does not depend on how it was reached, so positions that failed once are not tried again
    /// (`failed`): the search is polynomial however ambiguous the slot values.
    fn match_tokens(
        &self,
        tokens: &[Token],
        ti: usize,
        words: &[&str],
        wi: usize,
        slots: &mut Vec<(String, String)>,
        failed: &mut std::collections::HashSet<(usize, usize)>,
    ) -> bool {
        let Some(first) = tokens.get(ti) else { return wi == words.len() };
        if failed.contains(&(ti, wi)) {
            return false;
        }
        let ok = match first {
            Token::Word(w) => words.get(wi) == Some(&w.as_str()) && self.match_tokens(tokens, ti + 1, words, wi + 1, slots, failed),
            Token::Slot(s) => self.slots[s].iter().any(|v| {
                let n = v.split(' ').count();
                if wi + n <= words.len() && words[wi..wi + n].join(" ") == *v {
                    slots.push((s.clone(), v.clone()));
                    if self.match_tokens(tokens, ti + 1, words, wi + n, slots, failed) {
                        return true;
                    }
                    slots.pop();
                }
                false
            }),
        };
        if !ok {
            failed.insert((ti, wi));
        }
        ok
    }

    /// The slot values named in `text`, in the order heard (longest value first where they
    /// overlap: `top left` before `top`).
    pub fn slot_values_in(&self, text: &str) -> Vec<(String, String)> {
        let norm = normalize(text);
        let words: Vec<&str> = norm.split(' ').filter(|w| !w.is_empty()).collect();
        let mut all: Vec<(&String, &String, usize)> = self.slots.iter().flat_map(|(s, vs)| vs.iter().map(move |v| (s, v, v.split(' ').count()))).collect();
        all.sort_by_key(|(_, _, n)| std::cmp::Reverse(*n));
        let mut out = Vec::new();
        let mut i = 0;
        while i < words.len() {
            match all.iter().find(|(_, v, n)| i + n <= words.len() && words[i..i + n].join(" ") == **v) {
                Some((s, v, n)) => {
                    out.push(((*s).clone(), (*v).clone()));
                    i += n;
                }
                None => i += 1,
            }
        }
        out
    }

    /// Every template filled with the slot values `heard`, each slot taking the values of its
    /// kind in the order they were heard (templates needing more values than were heard are
    /// left out): the candidates a free-form sentence is matched against.
    pub fn fill(&self, heard: &[(String, String)]) -> Vec<String> {
        let mut out = Vec::new();
        for t in &self.templates {
            let mut used: BTreeMap<&str, usize> = BTreeMap::new();
            let mut words = Vec::new();
            let mut ok = true;
            for tok in &t.tokens {
                match tok {
                    Token::Word(w) => words.push(w.clone()),
                    Token::Slot(s) => {
                        let k = used.entry(s.as_str()).or_default();
                        match heard.iter().filter(|(hs, _)| hs == s).nth(*k) {
                            Some((_, v)) => {
                                words.push(v.clone());
                                *k += 1;
                            }
                            None => {
                                ok = false;
                                break;
                            }
                        }
                    }
                }
            }
            let text = words.join(" ");
            if ok && !out.contains(&text) {
                out.push(text);
            }
        }
        out
    }
}

fn tokenize(text: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        if rest[..open].contains('}') {
            return Err("a `}` without its `{`".into());
        }
        out.extend(normalize(&rest[..open]).split(' ').filter(|w| !w.is_empty()).map(|w| Token::Word(w.to_string())));
        let close = rest[open..].find('}').ok_or("a `{` without its `}`")? + open;
        let name = rest[open + 1..close].trim();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
            return Err(format!("slot name {name:?}: use lower-case letters and _"));
        }
        out.push(Token::Slot(name.to_string()));
        rest = &rest[close + 1..];
    }
    if rest.contains('}') {
        return Err("a `}` without its `{`".into());
    }
    out.extend(normalize(rest).split(' ').filter(|w| !w.is_empty()).map(|w| Token::Word(w.to_string())));
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_grammar_is_generated_from_the_simulators_templates_and_reads_its_instructions_back() {
        let v = Vocabulary::sim();
        assert_eq!(v.templates.len(), 24, "six families × four paraphrases");
        let g = v.jsgf();
        assert!(g.starts_with("#JSGF V1.0;\ngrammar lapa;\npublic <utterance> = <stop> | <instruction>;"), "{g}");
        assert!(g.contains("<t0> = push the <slot_block> to the <slot_side>;"), "{g}");
        assert!(g.contains("<slot_corner> = top left | top right | bottom left | bottom right;"), "{g}");
        assert!(g.contains("line up the <slot_block> the <slot_block> and the <slot_block>"), "commas dropped: {g}");
        assert!(!g.contains('{') && !g.contains(','), "{g}");
        // Every instruction the simulator makes, on every split, parses back to its own family.
        let mut rng = lapa_sim::rng::Rng::new(11);
        for split in lapa_sim::Split::ALL {
            for f in lapa_sim::TaskFamily::ALL {
                for _ in 0..5 {
                    let (_, task) = lapa_sim::task::sample_task(&mut rng, f, split);
                    let p = v.parse(&task.instruction).unwrap_or_else(|| panic!("{:?} does not parse", task.instruction));
                    assert_eq!(p.task, f.name(), "{}", task.instruction);
                }
            }
        }
        let a = v.parse("Put the red square in the top left corner.").unwrap();
        let b = v.parse("carry the red square to the top left corner").unwrap();
        assert!(a.same_meaning(&b) && a.template != b.template, "paraphrases mean the same: {a:?} {b:?}");
        assert!(!a.same_meaning(&v.parse("put the red square in the top right corner").unwrap()));
        assert_eq!(v.parse("put the red square in the corner"), None);
        assert!(v.words().contains("triangle") && v.words().contains("halt"));
        assert!(is_stop(" Stop! ") && is_stop("halt") && !is_stop("stop the red square"));
    }

    #[test]
    fn slot_values_are_found_in_free_text_and_fill_the_templates() {
        let v = Vocabulary::sim();
        let heard = v.slot_values_in("uh could you put the blue circle at the bottom left please");
        assert_eq!(heard, vec![("block".into(), "blue circle".into()), ("corner".into(), "bottom left".into())]);
        let c = v.fill(&heard);
        assert!(c.contains(&"put the blue circle in the bottom left corner".to_string()), "{c:?}");
        assert!(c.iter().all(|s| v.parse(s).is_some()), "candidates are in the grammar: {c:?}");
        assert!(c.iter().all(|s| !s.contains("{")), "{c:?}");
        // One block heard: templates naming two are left out.
        assert!(!c.iter().any(|s| s.starts_with("move the blue circle next to")));
        assert!(v.fill(&[]).is_empty());
    }

    #[test]
    fn ambiguous_slot_values_do_not_make_parsing_exponential() {
        // 30 slots whose values overlap ("a", "a a", …): a naive backtracking parse of a
        // sentence that fails only at its last word tries about 4^30 splits.
        let values: Vec<String> = (1..=4).map(|n| vec!["a"; n].join(" ")).collect();
        let template = vec!["{x}"; 30].join(" ") + " end";
        let v = Vocabulary::new(vec![("t".into(), template)], BTreeMap::from([("x".to_string(), values)])).unwrap();
        let said = vec!["a"; 60].join(" ");
        assert_eq!(v.parse(&format!("{said} nope")), None);
        assert_eq!(v.parse(&format!("{said} end")).unwrap().slots.len(), 30);
    }

    #[test]
    fn vocabulary_files_are_checked_field_by_field() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v.toml");
        std::fs::write(&p, "templates = [{ task = \"wave\", text = \"wave at the {person}\" }]\n[slots]\nperson = [\"Camera\", \"door\"]\n").unwrap();
        let v = Vocabulary::load(&p).unwrap();
        assert_eq!(v.parse("wave at the camera").unwrap().slots, vec![("person".into(), "camera".into())]);
        for (body, want) in [
            ("templates = [{ task = \"a\", text = \"go {where}\" }]\n", "names slot {where}"),
            ("templates = [{ task = \"a\", text = \"go {where\" }]\n[slots]\nwhere = [\"x\"]\n", "without its `}`"),
            ("templates = []\n", "no templates"),
            ("templates = [{ task = \"a\", text = \"go\", speed = 2 }]\n", "unknown field"),
            ("templates = [{ task = \"a\", text = \"go {x}\" }]\n[slots]\nx = [\"!!\"]\n", "has no words"),
            ("templates = [{ task = \"a\", text = \"go } to {x}\" }]\n[slots]\nx = [\"y\"]\n", "without its `{`"),
        ] {
            std::fs::write(&p, body).unwrap();
            let e = Vocabulary::load(&p).unwrap_err().to_string();
            assert!(e.contains("v.toml") && e.contains(want), "{body}: {e}");
        }
    }
}
