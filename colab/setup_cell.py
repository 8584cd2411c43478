# Setup. On Colab it installs the course at the ref its badge opened (Colab's own torch, torchvision,
# numpy and widgets stay as they are), switches on Colab's widget manager and, if you set USE_DRIVE,
# keeps data, caches, checkpoints and results in Google Drive. Elsewhere it installs nothing.
import sys

SOURCE = "https://github.com/cutswap-course/cutswap-notebooks@main"  # = cutswap_lib.SOURCE, <address>@<ref>
USE_DRIVE = False  # True: files go to MyDrive/cutswap and survive a runtime reset (Colab asks for access)
IN_COLAB = "google.colab" in sys.modules
if IN_COLAB:
    import importlib, importlib.metadata, os, pathlib, subprocess, tempfile
    from google.colab import output
    output.enable_custom_widget_manager()  # widgets beyond Colab's own (ipyevents: clicks in notebook 06)
    if USE_DRIVE:
        from google.colab import drive
        drive.mount("/content/drive")
        os.environ["CUTSWAP_HOME"] = "/content/drive/MyDrive/cutswap"  # read by cutswap_lib.config
    try:
        importlib.metadata.version("cutswap-lib")  # installed already (this runtime, before a restart)
    except importlib.metadata.PackageNotFoundError:
        here = pathlib.Path.cwd()
        clone = next((p for p in (here, *here.parents) if (p / "cutswap_lib" / "__init__.py").is_file()), None)
        target = ["-e", f"{clone}[colab]"] if clone else [f"cutswap-lib[colab] @ git+{SOURCE}"]
        keep = []  # pin what Colab ships: pip adds what is missing, replaces nothing
        for name in ("torch", "torchvision", "numpy", "scipy", "scikit-learn", "pillow", "matplotlib",
                     "opencv-python-headless", "tqdm", "ipywidgets"):
            try:
                keep.append(f"{name}=={importlib.metadata.version(name)}")
            except importlib.metadata.PackageNotFoundError:
                pass
        with tempfile.NamedTemporaryFile("w", suffix="-colab-pins.txt", delete=False) as pins:
            pins.write("\n".join(keep) + "\n")
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-c", pins.name, *target], check=True)
        if clone:
            sys.path.insert(0, str(clone))  # an editable install is seen by new processes only
        importlib.invalidate_caches()
import torch, torchvision, cutswap_lib
device = f"cuda ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else "cpu"
print(f"Python {sys.version.split()[0]}, torch {torch.__version__}, torchvision {torchvision.__version__}, "
      f"cutswap_lib {cutswap_lib.__version__}; device: {device}")
