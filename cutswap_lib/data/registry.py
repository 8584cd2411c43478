"""The registry of real datasets: one download record each (URL, checksum, size, licence, folders).

``data/README.md`` is the human view of the same table. Each URL, checksum and size cites
where it was read; nothing here was downloaded from this (offline) machine. When a host
moves a file, ``download_dataset(..., url=...)`` or ``$CUTSWAP_<KEY>_URL`` (read in
:mod:`cutswap_lib.config`) fetches it from the new address, checked against the same checksum.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class DatasetRecord:
    """Where a dataset comes from and where it lands under a data root.

    ``checksum`` is a hex digest of the archive in ``checksum_algo`` ("sha256" or "md5"),
    or None where none is published (then the verifier warns). ``size_bytes`` is the archive's
    size where a source records it (None, and the notes say so, where none does); it sizes the
    progress bar. ``unpacks_to`` is the folder (under the data root) the archive is extracted
    into; ``folder`` is the MVTec-layout folder ``AnomalyDataset`` reads (the same folder for
    MVTec AD).
    """

    name: str
    url: str
    checksum: str | None
    checksum_algo: str
    size_bytes: int | None
    licence: str
    archive: str
    unpacks_to: str
    folder: str
    categories: tuple[str, ...]
    notes: str = ""
    sources: tuple[str, ...] = field(default=())

    @property
    def sha256(self) -> str | None:
        """The sha256 digest when that is what the record holds, else None."""
        return self.checksum if self.checksum_algo == "sha256" else None


MVTEC_CATEGORIES = ("bottle", "cable", "capsule", "carpet", "grid", "hazelnut", "leather", "metal_nut",
                    "pill", "screw", "tile", "toothbrush", "transistor", "wood", "zipper")
VISA_CATEGORIES = ("candle", "capsules", "cashew", "chewinggum", "fryum", "macaroni1", "macaroni2",
                   "pcb1", "pcb2", "pcb3", "pcb4", "pipe_fryum")

DATASETS: dict[str, DatasetRecord] = {
    "mvtec": DatasetRecord(
        name="MVTec AD",
        # URL and sha256: anomalib, src/anomalib/data/datamodules/image/mvtec.py (DOWNLOAD_INFO).
        # This share link has answered 404 since November 2025 (the host rotates its links; the archive's
        # sha256 is unchanged). No current link could be confirmed from the offline development machine, so
        # the recorded one stays: use download_dataset("mvtec", root, url=...) or $CUTSWAP_MVTEC_URL.
        # (anomalib's later datamodules/image/mvtecad.py records another share link with the same sha256,
        # quoted in data/README.md; it could not be checked from here either.)
        url="https://www.mydrive.ch/shares/38536/3830184030e49fe74747669442f0f282/"
            "download/420938113-1629952094/mvtec_anomaly_detection.tar.xz",
        checksum="cf4313b13603bec67abb49ca959488f7eedce2a9f7795ec54446c649ac98cd3d",
        checksum_algo="sha256",
        size_bytes=5_264_982_680,  # public dataset manifests (MVTec quotes about 4.9 GB); not re-checked here
        licence="CC BY-NC-SA 4.0",
        archive="mvtec_anomaly_detection.tar.xz",
        unpacks_to="mvtec",
        folder="mvtec",
        categories=MVTEC_CATEGORIES,
        notes="Already in MVTec layout: the archive holds the 15 category folders at its top level. "
              "MVTec asks users to accept the licence on https://www.mvtec.com/company/research/datasets/mvtec-ad; "
              "the share link changes (this one answers 404 since November 2025): pass the link MVTec's "
              "download page gives as url=... or $CUTSWAP_MVTEC_URL.",
        sources=("openvinotoolkit/anomalib src/anomalib/data/datamodules/image/mvtec.py",
                 "public dataset manifests recording 5264982680 bytes for mvtec_anomaly_detection.tar.xz"),
    ),
    "visa": DatasetRecord(
        name="VisA",
        # URL and sha256: anomalib, src/anomalib/data/datamodules/image/visa.py (DOWNLOAD_INFO).
        url="https://amazon-visual-anomaly.s3.us-west-2.amazonaws.com/VisA_20220922.tar",
        checksum="2eb8690c803ab37de0324772964100169ec8ba1fa3f7e94291c9ca673f40f362",
        checksum_algo="sha256",
        size_bytes=1_929_840_640,  # public dataset manifests; not re-checked here
        # amazon-science/spot-diff README: "The data is released under the CC BY 4.0 license."
        # (anomalib's visa.py docstring says CC BY-NC-SA 4.0; the publisher's README is followed here.)
        licence="CC BY 4.0",
        archive="VisA_20220922.tar",
        unpacks_to="visa_raw",
        folder="visa",
        categories=VISA_CATEGORIES,
        notes="Converted to MVTec layout with the publisher's 1-class split split_csv/1cls.csv "
              "(prepare_visa): <object>/train/good, test/good, test/bad, ground_truth/bad/<stem>_mask.png.",
        sources=("openvinotoolkit/anomalib src/anomalib/data/datamodules/image/visa.py",
                 "amazon-science/spot-diff README.md",
                 "public dataset manifests recording 1929840640 bytes for VisA_20220922.tar"),
    ),
    "btad": DatasetRecord(
        name="BTAD (beanTech Anomaly Detection)",
        # URL and sha256: anomalib, src/anomalib/data/datamodules/image/btech.py (DOWNLOAD_INFO).
        url="https://avires.dimi.uniud.it/papers/btad/btad.zip",
        checksum="461c9387e515bfed41ecaae07c50cf6b10def647b36c9e31d239ab2736b10d2a",
        checksum_algo="sha256",
        size_bytes=None,  # not published
        licence="CC BY-SA 4.0 (as stated by the authors' VT-ADL repository)",
        archive="btad.zip",
        unpacks_to="btad_raw",
        folder="btad",
        categories=("01", "02", "03"),
        notes="The zip holds BTech_Dataset_transformed/{01,02,03}/{train/ok,test/ok,test/ko,ground_truth/ko}; "
              "prepare_btad renames ok -> good and masks <stem>.png|bmp -> <stem>_mask.png (0/255). "
              "Archive size not published.",
        sources=("openvinotoolkit/anomalib src/anomalib/data/datamodules/image/btech.py",
                 "openvinotoolkit/anomalib src/anomalib/data/datasets/image/btech.py"),
    ),
    "ksdd2": DatasetRecord(
        name="KolektorSDD2",
        # URL: ViCoS short link (redirects to https://data.vicos.si/datasets/KSDD/KolektorSDD2.zip), used by
        # many public loaders. ViCoS publishes no checksum; the sha256 and size below are the ones several
        # independent public repositories recorded after downloading the archive (they agree with each other).
        url="https://go.vicos.si/kolektorsdd2",
        checksum="edcdb486809b24f1d17b785e30c52fafc5999554dd5fe18ddf77b61ceb6f36a8",
        checksum_algo="sha256",
        size_bytes=853126555,
        licence="CC BY-NC-SA 4.0",
        archive="KolektorSDD2.zip",
        unpacks_to="ksdd2_raw",
        folder="ksdd2",
        categories=("ksdd2",),
        notes="Checksum not published by ViCoS (third-party record, see sources). train/ and test/ hold N.png "
              "with N_GT.png; prepare_ksdd2 writes one category 'ksdd2': all-zero GT -> good, test positives -> "
              "test/defect, train positives -> train_defect/defect (for the supervised settings).",
        sources=("third-party dataset manifests recording sha256 edcdb486...f36a8 and 853126555 bytes",
                 "BeJane/ADClick REST/dataset/prepocess_ksdd2.py (layout of train/test, N_GT.png masks)"),
    ),
}
