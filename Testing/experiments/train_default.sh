#!/usr/bin/env bash
# Train and cross-validate the bundled default (lckd-lite-brats 2.1.0) exactly as shipped.
# 2.1.0 is 2.0.0's final weights (the `final` step, versioned 2.0.0) with the recipe's
# thick-slice clean-up; its tables come from a refit of the same folds (docs/JOURNAL.md).
#
#   Testing/experiments/train_default.sh DATA OUT lane-a|lane-b|fold K|final|finish|wide K
#
# DATA is the labelled folder (../shared/data/brats-labelled); OUT a folder outside the work
# tree (it holds checkpoints: every step resumes where it stopped, so a restarted machine loses
# minutes). On 2 cores run `lane-a` and `lane-b` side by side (one thread each: faster than two
# threads for one run), then `finish` once both are done; `fold K` and `final` run one piece
# (e.g. a third process to balance the lanes). Each fold is scored right after it trains, on its
# test and validation cases, at 1 mm and on clinical 2D series. `wide K` runs fold K of the
# capacity arm (lite-wide, preset cpu-real-wide) on the same plan into OUT/cv-wide; folds 0 and 1
# of both arms decided which network ships (docs/JOURNAL.md).
set -euo pipefail
DATA=${1:?data folder}
OUT=${2:?output folder}
WHAT=${3:?lane-a, lane-b, fold K, final, finish or wide K}
# the shipped recipe: preset cpu-real (lite, started from lckd-lite-phantom), seed 0
CV=(crossval "$DATA" --out "$OUT/cv" --preset cpu-real --init-from lckd-lite-phantom --name lckd-lite-cv
    --threads 1 --seed 0 -q)
WIDE=(crossval "$DATA" --out "$OUT/cv-wide" --preset cpu-real-wide --name lckd-wide-cv --threads 1 --seed 0 -q)

fold() {  # train (or resume) one fold, then score it
  lckd "${CV[@]}" --fold "$1" --no-evaluate
  lckd "${CV[@]}" --fold "$1"
}

wide_fold() {  # the same for the capacity arm
  lckd "${WIDE[@]}" --fold "$1" --no-evaluate
  lckd "${WIDE[@]}" --fold "$1"
}

final() {  # the shipped model: every case trains, teachers fixed to T1ce + FLAIR (folds 0-1's election)
  resume=()
  [ -f "$OUT/final/checkpoint/checkpoint.json" ] && resume=(--resume)
  lckd train "$DATA" --preset cpu-real --init-from lckd-lite-phantom --out "$OUT/final" \
    --name lckd-lite-brats --version 2.0.0 --fixed-teachers T1ce,FLAIR --threads 1 --seed 0 -q "${resume[@]}" \
    --description "Lite LCKD network trained on 28 real glioma cases (BraTS-style, skull-stripped, co-registered, 1 mm), started from the phantom model's weights; research use only, not for clinical use" \
    --data-description "28 real glioma cases with reference labels (BraTS 2018-2021 training cases and BRATS 2013-2015 / TCGA cases): 22 with all four scans, 5 BRATS 2013 cases with FLAIR and T1ce only, 1 TCGA case with T1 only (semi-automatic labels). Terms: BraTS challenge data (and TCIA/TCGA), research use only. Cite: Menze et al., IEEE TMI 2015; Bakas et al., Sci Data 2017; Bakas et al., arXiv 1811.02629; Baid et al., arXiv 2107.02314; deepmedic example data CC BY-NC-SA 3.0 CH."
}

case "$WHAT" in
  lane-a) fold 0; fold 2; fold 4 ;;
  lane-b) fold 1; final; fold 3 ;;
  fold) fold "${4:?fold number}" ;;
  final) final ;;
  wide) wide_fold "${4:?fold number}" ;;
  finish)  # every fold scored and the final model trained: assemble what ships
    here=$(cd "$(dirname "$0")" && pwd)
    ship="$here/../../LCKDSegmentation/Resources/models/lckd-lite-brats"
    lckd "${CV[@]}"                 # nothing left to train or score: writes OUT/cv/crossval*.json
    python "$here/build_default_model.py" "$OUT/final" "$OUT/cv" --out "$ship" --version 2.1.0
    lckd calibrate "$OUT/cv" --update-card "$ship/lckd-lite-brats.json"
    mkdir -p "$ship/crossval"       # the evidence: every run's numbers, no fold weights
    cp "$OUT"/cv/crossval*.json "$OUT/cv/plan.json" "$OUT/cv/quality-calibration.json" "$ship/crossval/"
    python "$here/cv_tables.py" "$ship/crossval" --card "$ship/lckd-lite-brats.json" ;;
  *) echo "unknown step '$WHAT': lane-a, lane-b, fold K, final, finish or wide K" >&2; exit 2 ;;
esac
