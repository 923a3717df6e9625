import subprocess
import sys


def test_timm_imports_and_builds_a_six_channel_model_in_a_fresh_process():
    code = (
        "from cellblock.nets.torchcompat import import_timm\n"
        "import torch\n"
        "timm = import_timm()\n"
        "m = timm.create_model('densenet121', in_chans=6, num_classes=7, pretrained=False)\n"
        "print(tuple(m(torch.zeros(1, 6, 64, 64)).shape))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "(1, 7)"
