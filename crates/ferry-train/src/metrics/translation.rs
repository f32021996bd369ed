//! Translation quality per language: chrF, chrF++ and BLEU (sacreBLEU-exact, see [`super::chrf`]
//! and [`super::bleu`]) of hypotheses against references, grouped by a language (or pair)
//! label, with corpus-level scores over all segments and the mean over languages.

use std::collections::BTreeMap;

use serde::Serialize;

use super::bleu::BleuStats;
use super::chrf::ChrfStats;

/// One segment to score.
#[derive(Debug, Clone)]
pub struct Segment<'a> {
    /// The group (a target language, or a pair such as `de-en`).
    pub lang: &'a str,
    /// The system output.
    pub hypothesis: &'a str,
    /// The reference translation.
    pub reference: &'a str,
}

/// The scores of one group of segments.
#[derive(Debug, Clone, Serialize)]
pub struct Scores {
    /// Segments.
    pub segments: usize,
    /// chrF (character 6-grams, beta 2).
    pub chrf: f64,
    /// chrF++ (plus word 2-grams).
    pub chrf_pp: f64,
    /// BLEU (13a tokens, 4-grams, exp smoothing).
    pub bleu: f64,
    /// BLEU's brevity penalty.
    pub bleu_bp: f64,
}

/// Scores per language and overall.
#[derive(Debug, Clone, Serialize)]
pub struct TranslationReport {
    /// Per group, sorted by label.
    pub languages: BTreeMap<String, Scores>,
    /// Corpus-level over every segment.
    pub overall: Scores,
    /// The unweighted mean of the groups' scores (each language counts once).
    pub mean: Scores,
    /// The group with the lowest chrF.
    pub worst: Option<String>,
}

#[derive(Default)]
struct Acc {
    n: usize,
    chrf: Option<ChrfStats>,
    chrf_pp: Option<ChrfStats>,
    bleu: Option<BleuStats>,
}

impl Acc {
    fn add(&mut self, s: &Segment<'_>) {
        self.n += 1;
        let add = |acc: &mut Option<ChrfStats>, st: ChrfStats| match acc {
            Some(a) => a.add(&st),
            None => *acc = Some(st),
        };
        add(
            &mut self.chrf,
            ChrfStats::sentence(s.hypothesis, s.reference, 0),
        );
        add(
            &mut self.chrf_pp,
            ChrfStats::sentence(s.hypothesis, s.reference, 2),
        );
        let b = BleuStats::sentence(s.hypothesis, s.reference);
        match &mut self.bleu {
            Some(a) => a.add(&b),
            None => self.bleu = Some(b),
        }
    }

    fn scores(&self) -> Scores {
        let bleu = self.bleu.as_ref().map(|b| b.score(false));
        Scores {
            segments: self.n,
            chrf: self.chrf.as_ref().map_or(0.0, ChrfStats::score),
            chrf_pp: self.chrf_pp.as_ref().map_or(0.0, ChrfStats::score),
            bleu: bleu.as_ref().map_or(0.0, |b| b.score),
            bleu_bp: bleu.as_ref().map_or(0.0, |b| b.bp),
        }
    }
}

/// Scores `segments` per language and overall (statistics are summed per group, as sacreBLEU
/// scores a corpus).
pub fn score(segments: &[Segment<'_>]) -> TranslationReport {
    let mut groups: BTreeMap<&str, Acc> = BTreeMap::new();
    let mut all = Acc::default();
    for s in segments {
        groups.entry(s.lang).or_default().add(s);
        all.add(s);
    }
    let languages: BTreeMap<String, Scores> = groups
        .into_iter()
        .map(|(l, a)| (l.to_string(), a.scores()))
        .collect();
    let k = languages.len().max(1) as f64;
    let mean = Scores {
        segments: segments.len(),
        chrf: languages.values().map(|s| s.chrf).sum::<f64>() / k,
        chrf_pp: languages.values().map(|s| s.chrf_pp).sum::<f64>() / k,
        bleu: languages.values().map(|s| s.bleu).sum::<f64>() / k,
        bleu_bp: languages.values().map(|s| s.bleu_bp).sum::<f64>() / k,
    };
    let worst = languages
        .iter()
        .min_by(|a, b| a.1.chrf.total_cmp(&b.1.chrf))
        .map(|(l, _)| l.clone());
    TranslationReport {
        languages,
        overall: all.scores(),
        mean,
        worst,
    }
}

impl TranslationReport {
    /// A Markdown table: a row per language, then the mean and the corpus-level scores.
    pub fn markdown(&self, title: &str) -> String {
        let mut s = format!(
            "# {title}\n\n| language | segments | chrF | chrF++ | BLEU | BP |\n|---|---:|---:|---:|---:|---:|\n"
        );
        let row = |s: &mut String, name: &str, v: &Scores| {
            s.push_str(&format!(
                "| {name} | {} | {:.2} | {:.2} | {:.2} | {:.3} |\n",
                v.segments, v.chrf, v.chrf_pp, v.bleu, v.bleu_bp
            ));
        };
        for (l, v) in &self.languages {
            row(&mut s, l, v);
        }
        row(&mut s, "**mean over languages**", &self.mean);
        row(&mut s, "**all segments**", &self.overall);
        if let Some(w) = &self.worst {
            s.push_str(&format!("\nLowest chrF: {w}.\n"));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{bleu, chrf};

    #[test]
    fn groups_match_the_corpus_scores_of_their_segments() {
        let segs = [
            (
                "de",
                "Alle Menschen sind frei.",
                "Alle Menschen sind frei geboren.",
            ),
            (
                "de",
                "Jeder hat das Recht.",
                "Jeder hat das Recht auf Leben.",
            ),
            ("fr", "Tous les hommes.", "Tous les êtres humains."),
        ];
        let segments: Vec<Segment<'_>> = segs
            .iter()
            .map(|&(lang, hypothesis, reference)| Segment {
                lang,
                hypothesis,
                reference,
            })
            .collect();
        let r = score(&segments);
        let (h, rf): (Vec<&str>, Vec<&str>) = segs[..2].iter().map(|s| (s.1, s.2)).unzip();
        let de = &r.languages["de"];
        assert_eq!(de.segments, 2);
        assert_eq!(de.chrf, chrf::chrf_corpus(&h, &rf, 0));
        assert_eq!(de.chrf_pp, chrf::chrf_corpus(&h, &rf, 2));
        assert_eq!(de.bleu, bleu::bleu_corpus(&h, &rf).score);
        let (h, rf): (Vec<&str>, Vec<&str>) = segs.iter().map(|s| (s.1, s.2)).unzip();
        assert_eq!(r.overall.chrf, chrf::chrf_corpus(&h, &rf, 0));
        let mean = (r.languages["de"].chrf + r.languages["fr"].chrf) / 2.0;
        assert!((r.mean.chrf - mean).abs() < 1e-12);
        assert_eq!(r.worst.as_deref(), Some("fr"));
        assert!(r.markdown("t").contains("| de | 2 |"));
    }
}
