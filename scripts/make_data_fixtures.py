#!/usr/bin/env python3
"""Write the small multilingual corpus fixtures under fixtures/data/ for ferry-data's readers.

Every file is derived from corpora/udhr/ (made by scripts/make_udhr_corpus.py), in each format
the Rust readers must handle: TSV (with and without header), CSV (RFC 4180 quoting), JSON lines
(plain and gzipped), Parquet (pyarrow, several row groups), a Moses/Multi30k parallel layout,
one-folder-per-language text files (one of them gzipped) and a TSV full of bad lines with the
list of what is wrong in it. REFERENCE.json holds the record and per-language counts that the
Rust tests compare against, EXPECTED.json the bad lines, SHA256SUMS the hash of every file.

Usage (needs pyarrow, see scripts/requirements-fixtures.txt):
    .venv/bin/python scripts/make_data_fixtures.py           # (re)write fixtures/data/
    .venv/bin/python scripts/make_data_fixtures.py --check   # regenerate into a temp dir and
                                                             # compare with fixtures/data/SHA256SUMS
Options:
    --out DIR      write somewhere other than fixtures/data/
    --corpus DIR   read the UDHR corpus from somewhere other than corpora/udhr/

Everything written is a pure function of the corpus files (whose hashes are checked against
corpora/udhr/SHA256SUMS first) and of the pyarrow and zlib versions: gzip members carry
mtime 0 and no file name, Parquet files pyarrow's `created_by` string.
"""
import csv
import gzip
import io
import json
import platform
import shutil
import sys
import zlib
from collections import Counter
from pathlib import Path

from ferry_scripts import (check_against_sums, fixture_parser, json_bytes, read_sums, sha256,
                           write_sums)

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "fixtures" / "data"
DEFAULT_CORPUS = REPO / "corpora" / "udhr"
REGEN_COMMAND = ".venv/bin/python scripts/make_data_fixtures.py"

# Six languages, six scripts: Arabic (rtl), Latin, Greek, Latin, Cyrillic, Han (no spaces,
# ASCII commas inside the text).
LANGS = ["ar", "de", "el", "en", "ru", "zh"]
ARTICLES = range(1, 7)  # articles 1-6 of train.tsv: 7 paragraphs per language (article 2 has 2)
BY_LANG = ["ar", "en", "ru", "zh"]  # fixtures/data/by_lang/<lang>/part-0.txt
BY_LANG_GZ = "en"  # this one also gets part-1.txt.gz (articles 7-10)
MOSES_LINES = {"train": 6, "val": 3, "test": 3}  # first N lines of corpora/udhr/parallel/<split>.<lang>
MOSES_LANGS = ["de", "en"]
PARQUET_ROW_GROUP = 8

# The corpus holds no ASCII double quote at all, so two records quote a sentence of the corpus
# (built from the texts, see quoted_records): CSV must escape them as "" inside a quoted field.
# No field of any fixture *starts* with a double quote (TSV has no quoting rule for that).


def verify_corpus(corpus, rels):
    sums = read_sums(corpus / "SHA256SUMS")
    for rel in rels:
        got = sha256((corpus / rel).read_bytes())
        if sums.get(rel) != got:
            raise SystemExit(f"{corpus / rel}: sha256 {got} != {sums.get(rel)} in SHA256SUMS; "
                             "regenerate the corpus with scripts/make_udhr_corpus.py")


def read_tsv(path):
    """Rows of corpora/udhr/<split>.tsv as (lang, article, text)."""
    lines = path.read_text(encoding="utf-8").split("\n")
    assert lines[0] == "lang\tarticle\ttext" and lines[-1] == "", path
    rows = []
    for line in lines[1:-1]:
        lang, article, text = line.split("\t")
        rows.append((lang, int(article), text))
    return rows


def quoted_records(rows):
    """Two records whose text contains ASCII double quotes (and commas, inside and outside)."""
    def first(lang, article):
        return next(t for l, a, t in rows if l == lang and a == article)
    en3 = first("en", 3)  # "Everyone has the right to life, liberty and the security of person."
    de1 = first("de", 1).split(". ")[0] + "."  # first sentence of German article 1
    return [
        {"lang": "en", "text": f'Article 3, in full: "{en3}"', "label": 3},
        {"lang": "de", "text": f'Artikel 1, erster Satz: "{de1}", so die Erklärung.', "label": 1},
    ]


def corpus_records(rows):
    """The records of tsv/, jsonl/ and parquet/: articles 1-6 of each language, in corpus order
    (language, article, paragraph), each language followed by its quoted record if any."""
    quoted = {r["lang"]: r for r in quoted_records(rows)}
    records = []
    for lang in LANGS:
        records += [{"lang": l, "text": t, "label": a} for l, a, t in rows
                    if l == lang and a in ARTICLES]
        if lang in quoted:
            records.append(quoted[lang])
    for r in records:
        assert r["text"] and not r["text"].startswith('"'), r
        assert not any(c in r["text"] for c in "\t\r\n"), r
    return records


def gzip_bytes(data):
    """Deterministic gzip: mtime 0, no file name in the header, level 9."""
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as f:
        f.write(data)
    return buf.getvalue()


def make_tsv(records):
    tsv = "lang\ttext\tlabel\n" + "".join(f"{r['lang']}\t{r['text']}\t{r['label']}\n"
                                          for r in records)
    noheader = "".join(f"{r['text']}\t{r['lang']}\n" for r in records)
    buf = io.StringIO(newline="")
    # csv's defaults are RFC 4180: quote only fields that need it (comma, quote, line break),
    # double the quotes inside, CRLF line ends.
    w = csv.writer(buf, quoting=csv.QUOTE_MINIMAL, lineterminator="\r\n")
    w.writerow(["lang", "text", "label"])
    for r in records:
        w.writerow([r["lang"], r["text"], r["label"]])
    return {"tsv/corpus.tsv": tsv.encode("utf-8"),
            "tsv/corpus.csv": buf.getvalue().encode("utf-8"),
            "tsv/noheader.tsv": noheader.encode("utf-8")}


def make_jsonl(records):
    # Keys in the order text, lang, label; non-ASCII written as UTF-8 (json escapes `"` as \").
    data = "".join(json.dumps({"text": r["text"], "lang": r["lang"], "label": r["label"]},
                              ensure_ascii=False) + "\n" for r in records).encode("utf-8")
    return {"jsonl/corpus.jsonl": data, "jsonl/corpus.jsonl.gz": gzip_bytes(data)}


def make_parquet(records):
    import pyarrow as pa
    import pyarrow.parquet as pq
    schema = pa.schema([("text", pa.string()), ("lang", pa.string()), ("label", pa.int64())])
    table = pa.table({"text": [r["text"] for r in records],
                      "lang": [r["lang"] for r in records],
                      "label": [r["label"] for r in records]}, schema=schema)
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf, row_group_size=PARQUET_ROW_GROUP, compression="snappy")
    return {"parquet/corpus.parquet": buf.getvalue().to_pybytes()}


def make_moses(corpus):
    files = {}
    for split, n in MOSES_LINES.items():
        for lang in MOSES_LANGS:
            lines = (corpus / "parallel" / f"{split}.{lang}").read_text(encoding="utf-8")
            files[f"moses/{split}.{lang}"] = "".join(
                l + "\n" for l in lines.split("\n")[:n]).encode("utf-8")
    return files


def make_by_lang(rows):
    files = {}
    for lang in BY_LANG:
        texts = [t for l, a, t in rows if l == lang and a in ARTICLES]
        files[f"by_lang/{lang}/part-0.txt"] = "".join(t + "\n" for t in texts).encode("utf-8")
    texts = [t for l, a, t in rows if l == BY_LANG_GZ and 7 <= a <= 10]
    files[f"by_lang/{BY_LANG_GZ}/part-1.txt.gz"] = gzip_bytes(
        "".join(t + "\n" for t in texts).encode("utf-8"))
    return files


def make_bad(rows):
    """bad/corpus.tsv: good lines with one bad line of each kind between them, then a blank line.
    Each bad line has exactly one fault (right column count, known language, non-empty valid
    UTF-8 text otherwise)."""
    def good(lang, article, k=0):
        text = [t for l, a, t in rows if l == lang and a == article][k]
        return f"{lang}\t{text}\t{article}".encode("utf-8")
    en1 = next(t for l, a, t in rows if l == "en" and a == 1)
    # (line bytes, reason or None for a good line)
    lines = [
        (good("en", 1), None),
        (good("de", 1), None),
        (f"ru\t{next(t for l, a, t in rows if l == 'ru' and a == 3)}".encode("utf-8"),
         "wrong_columns"),  # 2 columns: label missing
        (good("ru", 1), None),
        (good("el", 1), None),
        # invalid UTF-8: a lone continuation byte 0x80 and a truncated 2-byte sequence 0xC3
        # followed by '(' (0x28), spliced into an otherwise good English line
        (b"en\t" + en1[:20].encode("utf-8") + b"\x80 " + b"\xc3(" + en1[20:].encode("utf-8")
         + b"\t1", "invalid_utf8"),
        (good("ar", 1), None),
        ("zh\t\t1".encode("utf-8"), "empty_text"),
        (good("zh", 1), None),
        (good("en", 3), None),
        (f"xx-notalang\t{en1}\t1".encode("utf-8"), "unknown_lang"),
        (good("de", 3), None),
        (f"el\t{next(t for l, a, t in rows if l == 'el' and a == 3)}\t3\textra".encode("utf-8"),
         "wrong_columns"),  # 4 columns
        (good("ru", 3), None),
        ("ar\t\t3".encode("utf-8"), "empty_text"),
        (good("zh", 3), None),
    ]
    data = b"lang\ttext\tlabel\n" + b"".join(l + b"\n" for l, _ in lines) + b"\n"
    bad = [{"line": i + 2, "reason": reason} for i, (_, reason) in enumerate(lines) if reason]
    good_lines = [l.decode("utf-8").split("\t") for l, reason in lines if reason is None]
    n_lines = data.count(b"\n")
    assert Counter(b["reason"] for b in bad) == {"wrong_columns": 2, "invalid_utf8": 1,
                                                 "empty_text": 2, "unknown_lang": 1}
    expected = {
        "file": "bad/corpus.tsv",
        "header": ["lang", "text", "label"],
        "lines": n_lines,
        "line_numbers": "1-based, the header is line 1",
        "bad_lines": bad,
        "blank_lines": [n_lines],
        "blank_lines_note": "the file ends with an empty line (\\n\\n at the end); it is not "
                            "a record and not an error: readers skip it",
        "known_langs": sorted({g[0] for g in good_lines}),
        "good_records": len(good_lines),
        "good_langs": dict(sorted(Counter(g[0] for g in good_lines).items())),
        "good_labels": [int(g[2]) for g in good_lines],
    }
    return data, expected


def summarize(records):
    """Counts of a list of {lang, text[, label]} records for REFERENCE.json."""
    texts = "\n".join(r["text"] for r in records).encode("utf-8")
    out = {"records": len(records),
           "langs": dict(sorted(Counter(r["lang"] for r in records).items())),
           "text_bytes": sum(len(r["text"].encode("utf-8")) for r in records),
           "text_sha256": sha256(texts)}
    if records and "label" in records[0]:
        out["label_sum"] = sum(r["label"] for r in records)
    return out


def read_back(out, files):
    """Load every fixture back with an independent reader (csv, json, gzip, pyarrow) and return
    its records as {lang, text[, label]} lists, keyed by file."""
    import pyarrow.parquet as pq
    got = {}
    text = lambda rel: (out / rel).read_bytes().decode("utf-8")
    lines = text("tsv/corpus.tsv").split("\n")
    assert lines[0] == "lang\ttext\tlabel" and lines[-1] == ""
    got["tsv/corpus.tsv"] = [{"lang": l, "text": t, "label": int(b)}
                             for l, t, b in (x.split("\t") for x in lines[1:-1])]
    with open(out / "tsv/corpus.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["lang", "text", "label"]
    got["tsv/corpus.csv"] = [{"lang": l, "text": t, "label": int(b)} for l, t, b in rows[1:]]
    got["tsv/noheader.tsv"] = [{"lang": l, "text": t} for t, l in
                               (x.split("\t") for x in text("tsv/noheader.tsv").split("\n")[:-1])]
    got["jsonl/corpus.jsonl"] = [json.loads(x) for x in text("jsonl/corpus.jsonl").splitlines()]
    got["jsonl/corpus.jsonl.gz"] = [
        json.loads(x) for x in gzip.decompress((out / "jsonl/corpus.jsonl.gz").read_bytes())
        .decode("utf-8").splitlines()]
    pf = pq.ParquetFile(out / "parquet/corpus.parquet")
    got["parquet/corpus.parquet"] = pf.read().to_pylist()
    for rel in files:
        if rel.startswith("moses/"):
            lang = rel.rsplit(".", 1)[1]
            got[rel] = [{"lang": lang, "text": t} for t in text(rel).split("\n")[:-1]]
        elif rel.startswith("by_lang/"):
            lang = rel.split("/")[1]
            raw = (out / rel).read_bytes()
            raw = gzip.decompress(raw) if rel.endswith(".gz") else raw
            got[rel] = [{"lang": lang, "text": t} for t in raw.decode("utf-8").split("\n")[:-1]]
    return got, pf


def build(out, corpus):
    import pyarrow
    inputs = ["train.tsv"] + [f"parallel/{s}.{l}" for s in MOSES_LINES for l in MOSES_LANGS]
    verify_corpus(corpus, inputs)
    rows = read_tsv(corpus / "train.tsv")
    records = corpus_records(rows)

    files = {}
    files.update(make_tsv(records))
    files.update(make_jsonl(records))
    files.update(make_parquet(records))
    files.update(make_moses(corpus))
    files.update(make_by_lang(rows))
    bad, expected = make_bad(rows)
    files["bad/corpus.tsv"] = bad
    files["bad/EXPECTED.json"] = json_bytes(expected)

    # Remove only what this script writes, then write.
    for sub in ["tsv", "jsonl", "parquet", "moses", "by_lang", "bad"]:
        if (out / sub).is_dir():
            shutil.rmtree(out / sub)
    for name in ["REFERENCE.json", "SHA256SUMS"]:
        (out / name).unlink(missing_ok=True)
    for rel, data in files.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(data)

    # Read everything back with independent readers and check it against what was meant.
    got, pf = read_back(out, files)
    for rel in ["tsv/corpus.tsv", "tsv/corpus.csv", "jsonl/corpus.jsonl",
                "jsonl/corpus.jsonl.gz", "parquet/corpus.parquet"]:
        assert got[rel] == records, rel
    assert got["tsv/noheader.tsv"] == [{"lang": r["lang"], "text": r["text"]} for r in records]
    csv_text = files["tsv/corpus.csv"].decode("utf-8")
    assert '""' in csv_text and csv_text.count("\r\n") == len(records) + 1
    meta = pf.metadata
    assert meta.num_row_groups == -(-len(records) // PARQUET_ROW_GROUP)
    assert all(meta.row_group(i).column(j).compression == "SNAPPY"
               for i in range(meta.num_row_groups) for j in range(meta.num_columns))
    with open(out / "bad/corpus.tsv", "rb") as f:
        bad_lines = f.read().split(b"\n")
    for b in expected["bad_lines"]:
        line = bad_lines[b["line"] - 1]
        if b["reason"] == "invalid_utf8":
            try:
                line.decode("utf-8")
                raise AssertionError("invalid_utf8 line decodes")
            except UnicodeDecodeError:
                pass
        else:
            cols = line.decode("utf-8").split("\t")
            assert (len(cols) != 3) == (b["reason"] == "wrong_columns"), b
            assert (cols[0] not in LANGS) == (b["reason"] == "unknown_lang"), b
            assert (len(cols) == 3 and cols[1] == "") == (b["reason"] == "empty_text"), b
    assert bad_lines[-2:] == [b"", b""]  # "...\n" + blank line "\n" at the end

    reference = {
        "made_by": {"script": REGEN_COMMAND, "python": platform.python_version(),
                    "pyarrow": pyarrow.__version__, "zlib": zlib.ZLIB_VERSION},
        "source": "corpora/udhr (scripts/make_udhr_corpus.py): train.tsv articles 1-6 of "
                  + ", ".join(LANGS) + "; parallel/{train,val,test}." + "/".join(MOSES_LANGS),
        "text_sha256_note": "sha256 of the record texts in file order joined with \\n (no "
                            "trailing newline), UTF-8; text_bytes = sum of the texts' UTF-8 "
                            "lengths; label_sum = sum of the labels where the file has them",
        "files": {},
    }
    for rel in sorted(got):
        reference["files"][rel] = summarize(got[rel])
    reference["files"]["parquet/corpus.parquet"].update({
        "row_groups": meta.num_row_groups,
        "rows_per_group": [meta.row_group(i).num_rows for i in range(meta.num_row_groups)],
        "compression": "SNAPPY",
        "schema": {"text": "string", "lang": "string", "label": "int64"},
        "created_by": meta.created_by,
        "format_version": meta.format_version,
    })
    good = [{"lang": l, "text": t, "label": int(b)} for l, t, b in
            (x.decode("utf-8").split("\t") for i, x in enumerate(bad_lines[1:-2], start=2)
             if i not in {b["line"] for b in expected["bad_lines"]})]
    reference["files"]["bad/corpus.tsv"] = dict(summarize(good), note="good records only; "
                                                "the bad lines are in bad/EXPECTED.json")
    assert reference["files"]["bad/corpus.tsv"]["records"] == expected["good_records"]
    ref_bytes = json_bytes(reference)
    (out / "REFERENCE.json").write_bytes(ref_bytes)
    files["REFERENCE.json"] = ref_bytes

    write_sums(out, files)
    return files, reference


def check(out, corpus):
    def regenerate(tmp):
        build(tmp / "data", corpus)
        return tmp / "data"

    def versions():
        import pyarrow
        return (f" (pyarrow {pyarrow.__version__}, zlib {zlib.ZLIB_VERSION}; "
                "parquet/ and *.gz depend on those versions)")

    return check_against_sums(out, regenerate, versions)


def main():
    ap = fixture_parser(__doc__, DEFAULT_OUT)
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    args = ap.parse_args()
    if args.check:
        return check(args.out, args.corpus)
    files, reference = build(args.out, args.corpus)
    for rel in sorted(files):
        r = reference["files"].get(rel)
        counts = f"{r['records']:3d} records {r['langs']}" if r else ""
        print(f"{len(files[rel]):7d}  {rel:28s} {counts}")
    total = sum(len(d) for d in files.values()) + (args.out / "SHA256SUMS").stat().st_size
    print(f"total: {total} bytes in {len(files) + 1} files in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
