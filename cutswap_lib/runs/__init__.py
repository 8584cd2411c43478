"""The command layer: the runs behind ``python -m cutswap_lib``, the papers' numbers, result files.

* :mod:`.toy`            – the main job: PatchCore on every toy category, its table and figures
* :mod:`.cutswap_tables` – the CutSwap paper's Tables I-VIII on one dataset (``cutswap-table``)
* :mod:`.cutswap_encoders` – the encoders those tables compare: networks, training groups, run identity
* :mod:`.cutswap_paper`  – the CutSwap paper's reported figures (Tables I-VIII)
* :mod:`.semirest_tables` – the SemiREST paper's Tables 1-6 on one dataset (``semirest-table``)
* :mod:`.semirest_inputs` – what those runs read besides the normal images: labelled images, boxes, textures
* :mod:`.semirest_protocols` – the paper's hyper-parameters per dataset and setting, as data
* :mod:`.semirest_paper` – the SemiREST paper's reported figures (Tables 1-6, annotation times)
* :mod:`.results`        – CSV files and Markdown tables, merged across runs
* :mod:`.checks`         – the checks a run makes before any work
* :mod:`.model_cache`    – trained models kept on disk, keyed by config, data and feature network

Each run takes plain arguments, calls the method (:mod:`cutswap_lib.cutswap`,
:mod:`cutswap_lib.semirest`, :mod:`cutswap_lib.patchcore`) and returns rows (dicts); argument
parsing lives in :mod:`cutswap_lib.__main__`, figures in :mod:`cutswap_lib.viz`.
"""

from . import (checks, cutswap_encoders, cutswap_paper, cutswap_tables, model_cache, results, semirest_inputs,
               semirest_paper, semirest_protocols, semirest_tables, toy)
from .cutswap_paper import paper_row
from .model_cache import cached_model, fit_semirest_cached
from .cutswap_encoders import Job, NetworkChoice, choose_network, training_groups
from .cutswap_tables import (RunSettings, ablation_variants, check_cutswap_run, cutswap_table, evaluate_category,
                             evaluate_patchcore, paired_differences, paper_layout, plan_jobs, saliency_maps)
from .results import format_results_table, merge_rows, settings_fingerprint, write_csv
from .semirest_paper import paper_triple
from .semirest_inputs import boxes_from_file, check_box_files, labelled_split
from .semirest_tables import SemiRunSettings, check_semirest_run, run_semirest_category, semirest_layout, semirest_table
from .toy import (DEFAULT_BACKBONES, BackboneSpec, ensure_profile_toy, ensure_toy_at, toy_root_at, run_patchcore, save_anomaly_figure,
                  summarize, summary_table, toy_gallery, toy_patchcore_table)

__all__ = [
    "BackboneSpec", "DEFAULT_BACKBONES", "Job", "NetworkChoice", "RunSettings", "SemiRunSettings",
    "ablation_variants", "boxes_from_file", "cached_model", "check_box_files", "check_cutswap_run",
    "check_semirest_run", "checks", "choose_network", "cutswap_encoders", "cutswap_paper",
    "cutswap_table", "cutswap_tables", "ensure_profile_toy", "ensure_toy_at", "toy_root_at", "evaluate_category", "evaluate_patchcore", "fit_semirest_cached",
    "format_results_table", "labelled_split", "merge_rows", "model_cache", "paired_differences", "paper_layout",
    "paper_row", "paper_triple", "plan_jobs", "results", "run_patchcore", "run_semirest_category",
    "saliency_maps", "save_anomaly_figure", "semirest_layout", "semirest_paper", "semirest_table",
    "semirest_inputs", "semirest_protocols", "semirest_tables", "settings_fingerprint", "summarize", "summary_table",
    "toy", "toy_gallery",
    "toy_patchcore_table", "training_groups", "write_csv",
]
