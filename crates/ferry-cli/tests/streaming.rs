//! Corpora larger than memory: `ferry train` with `[data] stream` under a virtual-memory
//! limit smaller than its corpus (and killed and resumed there), the in-memory path failing
//! under the same limit, and the streaming `ferry data` commands.

mod support;

use std::io::Write;
use std::path::Path;

use ferry_testkit::repo_root;
use support::{ferry, json, ok};

/// Writes a folder per language (3 languages, each its own letters) of about `mib` MiB.
fn big_corpus(dir: &Path, mib: usize) {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for (lang, letters) in [
        ("aa", "abcdefghij"),
        ("bb", "klmnopqrst"),
        ("cc", "uvwxyzabcd"),
    ] {
        let letters: Vec<char> = letters.chars().collect();
        let words: Vec<String> = (0..2000)
            .map(|_| {
                let n = 2 + next() as usize % 7;
                (0..n)
                    .map(|_| letters[next() as usize % letters.len()])
                    .collect()
            })
            .collect();
        std::fs::create_dir_all(dir.join(lang)).unwrap();
        let f = std::fs::File::create(dir.join(lang).join("part-0.txt")).unwrap();
        let mut w = std::io::BufWriter::new(f);
        let mut size = 0;
        while size < (mib << 20) / 3 {
            let n = 5 + next() as usize % 36;
            let line: Vec<&str> = (0..n)
                .map(|_| words[next() as usize % words.len()].as_str())
                .collect();
            let line = line.join(" ") + "\n";
            w.write_all(line.as_bytes()).unwrap();
            size += line.len();
        }
    }
}

fn config(corpus: &Path, out: &Path, stream: bool) -> String {
    format!(
        r#"
[data]
train = "{corpus}"
label = "lang"
max_len = 64
{stream}

[tokenizer]
char_ngrams = {{ min_n = 1, max_n = 3, buckets = 4096 }}

[model]
kind = "bag"
dim = 16

[optimizer]
kind = "adamw"
lr = 0.01

[schedule]
kind = "linear"
warmup = 0

[train]
steps = 30
batch_size = 32
seed = 1
threads = 2
checkpoint_every = 10

[output]
dir = "{out}"
"#,
        corpus = corpus.display(),
        out = out.display(),
        stream = if stream {
            "stream = { window = 2048, block = 256 }"
        } else {
            ""
        },
    )
}

/// Runs `ferry args` under `ulimit -v kib`.
#[cfg(target_os = "linux")]
fn ferry_limited(kib: u64, args: &[&str], cwd: &Path) -> std::process::Output {
    std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -v {kib} && exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run sh")
}

#[cfg(target_os = "linux")]
#[test]
fn training_streams_a_corpus_larger_than_its_memory_limit() {
    // 192 MiB of text under a 160 MiB address-space limit (code, stacks and thread arenas
    // included): the streamed run must not hold the corpus; the in-memory one cannot.
    const LIMIT_KIB: u64 = 160 * 1024;
    let tmp = tempfile::tempdir().unwrap();
    let corpus = tmp.path().join("corpus");
    big_corpus(&corpus, 192);
    let bytes: u64 = ["aa", "bb", "cc"]
        .iter()
        .map(|l| {
            std::fs::metadata(corpus.join(l).join("part-0.txt"))
                .unwrap()
                .len()
        })
        .sum();
    assert!(
        bytes > LIMIT_KIB * 1024,
        "the corpus is larger than the limit"
    );
    let streamed = tmp.path().join("streamed.toml");
    std::fs::write(&streamed, config(&corpus, &tmp.path().join("s"), true)).unwrap();
    let cfg = streamed.to_str().unwrap();
    let stop = ["train", "--config", cfg, "--stop-after", "15", "-q"];
    ok(&ferry_limited(LIMIT_KIB, &stop, tmp.path()));
    let resume = ["train", "--config", cfg, "--resume", "-q"];
    ok(&ferry_limited(LIMIT_KIB, &resume, tmp.path()));
    let steps = std::fs::read_to_string(tmp.path().join("s/metrics.jsonl"))
        .unwrap()
        .lines()
        .filter(|l| l.contains("\"loss\""))
        .count();
    assert_eq!(
        steps, 30,
        "steps 1-10 kept, 11-15 redone after the resume, 16-30"
    );
    assert!(tmp.path().join("s/last/model.safetensors").is_file());

    let in_memory = tmp.path().join("memory.toml");
    std::fs::write(&in_memory, config(&corpus, &tmp.path().join("m"), false)).unwrap();
    let args = ["train", "--config", in_memory.to_str().unwrap(), "-q"];
    let out = ferry_limited(LIMIT_KIB, &args, tmp.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("memory allocation"),
        "the in-memory path must run out of memory under the limit, or the test proves \
         nothing: {stderr}"
    );
}

#[test]
fn data_commands_shard_and_stream_a_folder_per_language() {
    let tmp = tempfile::tempdir().unwrap();
    let train = repo_root().join("corpora/udhr/train.tsv");
    let train = train.to_str().unwrap();
    let dry = json(&ferry(
        &["data", "shard", train, "--out", "sh", "--dry-run", "--json"],
        tmp.path(),
    ));
    assert_eq!(dry["written"], false);
    assert!(!tmp.path().join("sh").exists());
    let j = json(&ferry(
        &["data", "shard", train, "--out", "sh", "--json"],
        tmp.path(),
    ));
    assert_eq!(j["records"], dry["records"]);
    assert_eq!(j["languages"].as_array().unwrap().len(), 47);
    assert!(tmp.path().join("sh/de/part-00000.jsonl").is_file());
    let again = ferry(&["data", "shard", train, "--out", "sh"], tmp.path());
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));

    // The folder reads like the file it came from.
    let stats = |c: &str| json(&ferry(&["data", "stats", c, "--json"], tmp.path()));
    let (a, b) = (stats(train), stats("sh"));
    assert_eq!(a["records"], b["records"]);
    assert_eq!(a["languages"], b["languages"]);

    let s = json(&ferry(
        &[
            "data", "sample", "sh", "--alpha", "0", "--size", "470", "--out", "s.tsv", "--json",
        ],
        tmp.path(),
    ));
    assert_eq!(s["streamed"], true);
    for l in s["languages"].as_array().unwrap() {
        let drawn = l["drawn"].as_u64().unwrap();
        assert!((3..=20).contains(&drawn), "alpha 0 balances languages: {l}");
    }
    let written = std::fs::read_to_string(tmp.path().join("s.tsv")).unwrap();
    assert_eq!(written.lines().count(), 471);
    let rep = ferry(
        &["data", "sample", "sh", "--replacement", "--size", "10"],
        tmp.path(),
    );
    assert!(
        String::from_utf8_lossy(&rep.stderr).contains("--replacement needs the corpus in memory")
    );
    let t = json(&ferry(
        &[
            "data",
            "tokenizer",
            "train",
            "sh",
            "--kind",
            "bpe",
            "--vocab-size",
            "2000",
            "--out",
            "tok.json",
            "--json",
        ],
        tmp.path(),
    ));
    assert_eq!(t["streamed"], true);
    assert_eq!(t["per_language"].as_object().unwrap().len(), 47);

    // Batching in windows keeps every record and token; only the bucketing is local.
    let batch = |w: &str| {
        json(&ferry(
            &[
                "data",
                "batch",
                train,
                "--tokenizer",
                "tok.json",
                "--window",
                w,
                "--json",
            ],
            tmp.path(),
        ))
    };
    let (whole, windowed) = (batch("0"), batch("100"));
    assert_eq!(whole["records"], windowed["records"]);
    assert_eq!(whole["tokens"], windowed["tokens"]);
    assert!(windowed["padded_tokens"].as_u64() >= whole["padded_tokens"].as_u64());
}

#[test]
fn the_shipped_streamed_identifier_is_the_in_memory_one() {
    let tmp = tempfile::tempdir().unwrap();
    let root = repo_root();
    let train = |cfg: &str, out: &str| {
        let out = tmp.path().join(out);
        let cfg = root.join("configs").join(cfg);
        ok(&ferry(
            &[
                "train",
                "--config",
                cfg.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
                "-q",
            ],
            &root,
        ));
        std::fs::read(out.join("best/model.safetensors")).unwrap()
    };
    let streamed = train("langid-udhr-stream.toml", "s");
    assert!(tmp.path().join("s/shards/de/part-00000.jsonl").is_file());
    assert_eq!(streamed, train("langid-udhr.toml", "m"));
}
