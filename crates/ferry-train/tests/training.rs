//! Whole training runs on the repo's UDHR corpus: exact resume, keep-last/keep-best,
//! gradients reaching every parameter, data parallelism, and reports.

use std::path::Path;

use candle_core::{Device, Tensor};
use ferry_data::batch::{BatchConfig, BatchSize, Example, PadSide};
use ferry_data::rng::Rng;
use ferry_testkit::repo_root;

mod common;
use common::step_losses;
use ferry_train::config::{LossKind, TrainConfig};
use ferry_train::grads::Grads;
use ferry_train::models::{Arch, BertConfig, Classifier, ModelSpec, Pooling, TransformerConfig};
use ferry_train::nn::Activation;
use ferry_train::run::{micro_batch, train, LossSpec, RunOptions};

fn config(out: &Path, model: &str, steps: u64) -> TrainConfig {
    let udhr = repo_root().join("corpora/udhr");
    let text = format!(
        r#"
[data]
train = "{train}"
dev = "{dev}"
test = "{test}"
languages = ["de", "en", "es", "fr", "nl", "ru", "uk"]
max_len = 48

[tokenizer]
train = {{ kind = "bpe", vocab_size = 600 }}

[model]
{model}

[optimizer]
kind = "adamw"
lr = 0.01

[schedule]
kind = "cosine"
warmup = 3

[train]
steps = {steps}
batch_size = 8
grad_accum = 2
clip_norm = 1.0
label_smoothing = 0.1
seed = 5
alpha = 0.5
eval_every = 4
keep_last = 1
threads = 2

[output]
dir = "{out}"
"#,
        train = udhr.join("train.tsv").display(),
        dev = udhr.join("dev.tsv").display(),
        test = udhr.join("test.tsv").display(),
        out = out.display(),
    );
    let cfg: TrainConfig = toml::from_str(&text).unwrap();
    cfg.check().unwrap();
    cfg
}

const TRANSFORMER: &str =
    "kind = \"transformer\"\nlayers = 1\nheads = 2\ndim = 16\nff = 32\nmax_len = 48";

#[test]
fn a_killed_and_resumed_run_matches_an_uninterrupted_one_bit_for_bit() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let opts = |stop| RunOptions {
        stop_after: stop,
        ..RunOptions::default()
    };
    let full = train(&config(&a, TRANSFORMER, 12), &opts(None), &mut |_| {}).unwrap();
    assert_eq!(full.steps, 12);
    // Stops after step 6: the newest checkpoint is step 4, and steps 5-6 are in the log.
    let cfg_b = config(&b, TRANSFORMER, 12);
    let part = train(&cfg_b, &opts(Some(6)), &mut |_| {}).unwrap();
    assert_eq!(part.steps, 6);
    assert_eq!(step_losses(&b).len(), 6);
    let err = train(&cfg_b, &opts(None), &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("--resume"), "{err}");
    let resumed = train(
        &cfg_b,
        &RunOptions {
            resume: true,
            ..opts(None)
        },
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(resumed.steps, 12);
    assert_eq!(resumed.losses.len(), 8, "resumed from step 4");
    assert_eq!(step_losses(&a), step_losses(&b), "the loss curves differ");
    for f in ["last/model.safetensors", "best/model.safetensors"] {
        assert_eq!(
            std::fs::read(a.join(f)).unwrap(),
            std::fs::read(b.join(f)).unwrap(),
            "{f} differs"
        );
    }
    // keep_last = 1 plus the best: at most two checkpoints, the newest among them.
    let ckpts = ferry_train::model_dir::list_checkpoints(&b.join("checkpoints"));
    assert!(
        ckpts.len() <= 2 && ckpts.last().unwrap().0 == 12,
        "{ckpts:?}"
    );
    assert!(!std::fs::read_dir(&b).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .contains("ferry-tmp")));
}

#[test]
fn training_learns_and_reports_per_language() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), "kind = \"bag\"\ndim = 32", 60);
    let summary = train(&cfg, &RunOptions::default(), &mut |_| {}).unwrap();
    let losses = &summary.losses;
    let head: f32 = losses[..5].iter().sum::<f32>() / 5.0;
    let tail: f32 = losses[losses.len() - 5..].iter().sum::<f32>() / 5.0;
    assert!(tail < head * 0.75, "loss did not fall: {head} -> {tail}");
    let evals = ferry_train::run::final_report(&cfg, &summary, &Device::Cpu).unwrap();
    let test = &evals[0].1;
    // The test file has 47 languages; 7 were trained: the other 40 are unknown classes.
    assert_eq!(test.report.per_language.len(), 47);
    assert_eq!(test.unknown_class, 40 * 7);
    let seen = &test.zero_shot_split()["seen"];
    assert_eq!(seen.languages, 7);
    assert!(
        seen.accuracy > 0.8,
        "seen-language accuracy {}",
        seen.accuracy
    );
    let md = std::fs::read_to_string(tmp.path().join("report.md")).unwrap();
    assert!(
        md.contains("| uk | yes |") && md.contains("zero-shot"),
        "{md}"
    );
    for f in ["report.json", "accuracy.svg", "loss.svg"] {
        assert!(tmp.path().join(f).is_file(), "{f} missing");
    }
}

fn random_batch(vocab: u32, classes: u32, rows: usize, seed: u64) -> Vec<Example> {
    let mut rng = Rng::new(seed);
    (0..rows)
        .map(|i| Example {
            ids: (0..3 + i % 5)
                .map(|_| 1 + rng.below(u64::from(vocab - 1)) as u32)
                .collect(),
            lang: "xx".into(),
            label: Some(rng.below(u64::from(classes)) as u32),
            target: None,
        })
        .collect()
}

fn specs() -> Vec<ModelSpec> {
    let classes: Vec<String> = (0..3).map(|c| c.to_string()).collect();
    let t = |activation, norm_first, pooling| {
        Arch::Transformer(TransformerConfig {
            layers: 2,
            heads: 2,
            dim: 8,
            ff: 16,
            max_len: 16,
            activation,
            norm_first,
            pooling,
        })
    };
    let bert = BertConfig {
        vocab_size: 40,
        hidden_size: 8,
        num_hidden_layers: 2,
        num_attention_heads: 2,
        intermediate_size: 16,
        hidden_act: "gelu".into(),
        layer_norm_eps: 1e-12,
        max_position_embeddings: 16,
        type_vocab_size: 2,
    };
    [
        Arch::Bag { dim: 8 },
        t(Activation::Relu, false, Pooling::Mean),
        t(Activation::Gelu, true, Pooling::Cls),
        Arch::Bert {
            config: bert,
            pooling: Pooling::Mean,
        },
    ]
    .into_iter()
    .map(|arch| ModelSpec {
        arch,
        vocab_size: 40,
        classes: classes.clone(),
    })
    .collect()
}

fn bcfg() -> BatchConfig {
    BatchConfig {
        size: BatchSize::Examples(64),
        bucket: false,
        shuffle: None,
        pad_id: 0,
        side: PadSide::Right,
        pad_to_multiple_of: None,
    }
}

#[test]
fn every_parameter_of_every_model_gets_a_gradient() {
    let rows = random_batch(40, 3, 6, 1);
    let refs: Vec<&Example> = rows.iter().collect();
    for spec in specs() {
        let model = Classifier::new(&spec, 3, &Device::Cpu).unwrap();
        let (_, grads) = micro_batch(
            &model,
            &refs,
            &bcfg(),
            &LossSpec {
                kind: LossKind::CrossEntropy,
                smoothing: 0.0,
                scale: 1.0,
            },
            1,
            &Device::Cpu,
        )
        .unwrap();
        for ((name, _, _), g) in model.params().iter().zip(&grads.0) {
            let g = g
                .as_ref()
                .unwrap_or_else(|| panic!("{}: {name} has no gradient", spec.arch.name()));
            let norm: f32 = g
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .sqrt()
                .unwrap()
                .to_scalar()
                .unwrap();
            // A key bias adds the same q.b_k to every score of a query row, which softmax
            // ignores: its gradient is 0 in every framework (in PyTorch's packed
            // in_proj_bias the q and v parts keep the norm above 0).
            let unused = name.ends_with("key.bias");
            assert!(
                norm > 1e-7 || unused,
                "{}: {name} gets a zero gradient",
                spec.arch.name()
            );
        }
    }
}

#[test]
fn data_parallel_workers_compute_the_same_gradient_as_one() {
    let rows = random_batch(40, 3, 10, 2);
    let refs: Vec<&Example> = rows.iter().collect();
    for spec in specs() {
        let model = Classifier::new(&spec, 4, &Device::Cpu).unwrap();
        let run = |w| {
            micro_batch(
                &model,
                &refs,
                &bcfg(),
                &LossSpec {
                    kind: LossKind::CrossEntropy,
                    smoothing: 0.1,
                    scale: 1.0,
                },
                w,
                &Device::Cpu,
            )
            .unwrap()
        };
        let (l1, g1) = run(1);
        let (l3, g3) = run(3);
        assert!(
            (l1 - l3).abs() < 1e-5,
            "{}: loss {l1} vs {l3}",
            spec.arch.name()
        );
        for (((name, _, _), a), b) in model.params().iter().zip(&g1.0).zip(&g3.0) {
            let d = common::max_abs_diff(a.as_ref().unwrap(), b.as_ref().unwrap());
            assert!(
                d < 1e-5,
                "{}: {name} differs by {d} with 3 workers",
                spec.arch.name()
            );
        }
    }
}

#[test]
fn accumulated_gradients_add_up() {
    let spec = &specs()[1];
    let model = Classifier::new(spec, 1, &Device::Cpu).unwrap();
    let rows = random_batch(40, 3, 4, 3);
    let refs: Vec<&Example> = rows.iter().collect();
    let (_, mut a) = micro_batch(
        &model,
        &refs[..2],
        &bcfg(),
        &LossSpec {
            kind: LossKind::Nll,
            smoothing: 0.0,
            scale: 1.0,
        },
        1,
        &Device::Cpu,
    )
    .unwrap();
    let (_, b) = micro_batch(
        &model,
        &refs[2..],
        &bcfg(),
        &LossSpec {
            kind: LossKind::Nll,
            smoothing: 0.0,
            scale: 1.0,
        },
        1,
        &Device::Cpu,
    )
    .unwrap();
    let norm_a = a.global_norm().unwrap();
    let sum = |g: &Grads| -> f32 {
        g.0.iter()
            .flatten()
            .map(|t: &Tensor| t.sum_all().unwrap().to_scalar::<f32>().unwrap())
            .sum()
    };
    let (sa, sb) = (sum(&a), sum(&b));
    a.accumulate(b).unwrap();
    assert!((sum(&a) - (sa + sb)).abs() < 1e-4);
    assert!(a.global_norm().unwrap() != norm_a);
}

#[test]
fn early_stopping_ends_a_run_that_stops_improving() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(tmp.path(), "kind = \"bag\"\ndim = 8", 40);
    // A learning rate of 0: the dev metric never improves after the first evaluation.
    cfg.optimizer = toml::from_str("kind = \"sgd\"\nlr = 0.0").unwrap();
    cfg.train.early_stopping = Some(toml::from_str("patience = 2").unwrap());
    cfg.check().unwrap();
    let s = train(&cfg, &RunOptions::default(), &mut |_| {}).unwrap();
    assert!(s.stopped_early);
    assert_eq!(s.steps, 12, "best at 4, no better at 8 and 12");
    assert!(tmp.path().join("checkpoints/step-00000012").is_dir());
    assert!(tmp.path().join("last/model.safetensors").is_file());
}

#[test]
fn broken_model_folders_and_checkpoints_are_errors_naming_the_file() {
    use ferry_train::model_dir::load_model;
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(tmp.path(), "kind = \"bag\"\ndim = 8", 4);
    cfg.train.eval_every = Some(2);
    train(&cfg, &RunOptions::default(), &mut |_| {}).unwrap();
    let dev = Device::Cpu;
    let copy = |name: &str| {
        let dir = tmp.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for f in ["model.safetensors", "ferry-model.json", "tokenizer.json"] {
            std::fs::copy(tmp.path().join("best").join(f), dir.join(f)).unwrap();
        }
        dir
    };
    let err = |dir: &Path| {
        load_model(dir, None, &dev)
            .err()
            .expect("an error")
            .to_string()
    };

    let truncated = copy("truncated");
    let w = truncated.join("model.safetensors");
    let bytes = std::fs::read(&w).unwrap();
    std::fs::write(&w, &bytes[..bytes.len() / 2]).unwrap();
    let e = err(&truncated);
    assert!(e.contains("model.safetensors"), "{e}");

    let garbled = copy("garbled");
    std::fs::write(garbled.join("ferry-model.json"), "{\"format\": 3").unwrap();
    let e = err(&garbled);
    assert!(
        e.contains("ferry-model.json") && e.contains("cannot be parsed"),
        "{e}"
    );

    // Weights of another model: the error names the tensor and both shapes.
    let other = copy("other");
    std::fs::copy(
        ferry_testkit::fixture("train/bag_adamw.init.safetensors"),
        other.join("model.safetensors"),
    )
    .unwrap();
    let e = err(&other);
    assert!(e.contains("embedding.weight") && e.contains("shape"), "{e}");

    // A corrupt trainer state stops --resume with the file's name.
    let ckpt = ferry_train::model_dir::list_checkpoints(&tmp.path().join("checkpoints"))
        .pop()
        .unwrap()
        .1;
    std::fs::write(ckpt.join("trainer-state.json"), "not json").unwrap();
    let resume = RunOptions {
        resume: true,
        ..RunOptions::default()
    };
    let e = train(&cfg, &resume, &mut |_| {}).unwrap_err().to_string();
    assert!(e.contains("trainer-state.json"), "{e}");
}

/// Cross-lingual transfer: which UDHR article a paragraph comes from, trained on Spanish and
/// Russian only and evaluated on all 47 languages (the articles are parallel). Unseen Romance
/// and Slavic languages share character n-grams with the seen ones; unseen languages in
/// scripts nobody saw do not: the report's family/script table must show that gap.
#[test]
fn the_report_splits_zero_shot_transfer_by_family_and_script() {
    let tmp = tempfile::tempdir().unwrap();
    let src = std::fs::read_to_string(repo_root().join("corpora/udhr/train.tsv")).unwrap();
    let mut corpus = String::from("lang\tlabel\ttext\n");
    for line in src.lines().skip(1) {
        let c: Vec<&str> = line.split('\t').collect();
        corpus += &format!("{}\tarticle-{}\t{}\n", c[0], c[1], c[2]);
    }
    let data = tmp.path().join("articles.tsv");
    std::fs::write(&data, corpus).unwrap();
    let text = format!(
        r#"
[data]
train = "{data}"
test = "{data}"
label = "label"
languages = ["es", "ru"]
max_len = 8192
[tokenizer]
char_ngrams = {{ min_n = 1, max_n = 5, buckets = 65536 }}
[model]
kind = "bag"
init = {{ kind = "naive_bayes" }}
[optimizer]
kind = "adamw"
lr = 0.001
[train]
steps = 0
batch_size = 8
[output]
dir = "{out}"
"#,
        data = data.display(),
        out = tmp.path().join("run").display()
    );
    let cfg: TrainConfig = toml::from_str(&text).unwrap();
    cfg.check().unwrap();
    let summary = train(&cfg, &RunOptions::default(), &mut |_| {}).unwrap();
    let evals = ferry_train::run::final_report(&cfg, &summary, &Device::Cpu).unwrap();
    let groups = evals[0].1.transfer_groups();
    let acc = |by: &str, group: &str| {
        let g = groups
            .iter()
            .find(|g| g.by == by && g.group == group)
            .unwrap_or_else(|| panic!("no {by} {group} in {groups:?}"));
        (
            g.seen.as_ref().map(|s| s.accuracy),
            g.zero_shot.as_ref().unwrap().accuracy,
        )
    };
    let (romance_seen, romance_zero) = acc("family", "Romance");
    let (slavic_seen, slavic_zero) = acc("family", "Slavic");
    let (han_seen, han_zero) = acc("script", "Han");
    assert!(romance_seen.unwrap() > 0.9 && slavic_seen.unwrap() > 0.9);
    assert_eq!(han_seen, None, "nobody trained on Chinese");
    // 23 articles: chance is about 0.04 to 0.1 (article 0, the preamble, is the largest).
    assert!(
        romance_zero > han_zero + 0.2 && slavic_zero > han_zero + 0.2,
        "Romance {romance_zero}, Slavic {slavic_zero}, Han {han_zero}"
    );
    let run = tmp.path().join("run");
    let md = std::fs::read_to_string(run.join("report.md")).unwrap();
    assert!(
        md.contains("## Zero-shot transfer by family and script")
            && md.contains("| family | Romance | 1 |"),
        "{md}"
    );
    let svg = std::fs::read_to_string(run.join("transfer.svg")).unwrap();
    assert!(
        svg.contains("family Romance") && svg.contains("zero-shot"),
        "{svg}"
    );
}
