"""The entry points behind ``01_data/view_data.py`` and every setup's ``view_batch.py``."""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Sequence
from pathlib import Path

import neuroglancer

from cellblock.cli.values import comma_list
from cellblock.store.packed import PackedDataset
from cellblock.training.snapshots import read_snapshot
from cellblock.viewer import server
from cellblock.viewer.batch import show_snapshot
from cellblock.viewer.dataserver import DataServer
from cellblock.viewer.display import CONTRASTS
from cellblock.viewer.fields import show_fields
from cellblock.viewer.montage import plate_montage
from cellblock.viewer.mosaic import TileGrid
from cellblock.viewer.overlay import load_calls, summarize_calls
from cellblock.viewer.plate import parse_plate, show_plate
from cellblock.viewer.screenshot import screenshot

__all__ = ["view_batch_main", "view_data_main"]

SERVE_VIEWPORT = (1280, 720)

DATA_EXAMPLES = """
examples:
  view_data.py --data demo/dataset --plate HEPG2-01/Plate1              # serve; open the URL
  view_data.py --data demo/dataset --plate HEPG2-02/Plate1 \\
      --predictions demo/ensemble --screenshot plate.png --montage overview.png
  view_data.py --data DATASET --plate U2OS-01/Plate2 --bind 0.0.0.0 --port 8080
        (reachable from other machines: anyone who can reach this one sees the data)
  view_data.py --data demo/dataset --plate HEPG2-01/Plate1 --serve [--wells B02,C03]
        (the dataset folder over HTTP; neuroglancer reads the OME-Zarr fields itself)
"""


def _size(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d+)x(\d+)", text)
    if m is None or min(int(m.group(1)), int(m.group(2))) < 16:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, e.g. 1600x1000, got {text!r}")
    return int(m.group(1)), int(m.group(2))


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"expected a TCP port 0-65535, got {text!r}")
    return port


def _serve_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--bind",
        default=server.DEFAULT_BIND,
        help="address to listen on (default %(default)s: this machine only)",
    )
    p.add_argument("--port", type=_port, default=0, help="TCP port (default: a free one)")
    p.add_argument(
        "--screenshot",
        type=Path,
        metavar="PNG",
        help="render headless (chromium) into PNG and exit instead of serving",
    )
    p.add_argument(
        "--size",
        type=_size,
        metavar="WxH",
        help="screenshot size in pixels (default: 1600 wide, as high as the picture needs); "
        "when serving, the window size to frame the view for (default 1280x720)",
    )


def _fit(shape: tuple[int, int], size: tuple[int, int] | None) -> tuple[int, int]:
    """``size``, or 1600 pixels wide and tall enough for a ``(height, width)`` picture."""
    if size is not None:
        return size
    height, width = shape
    return 1600, int(min(1600, max(200, 1600 * height / width * 1.06)))


def _viewer(args: argparse.Namespace) -> neuroglancer.Viewer:
    server.start(args.bind, args.port)
    return neuroglancer.Viewer()


def _serve(viewer: neuroglancer.Viewer, what: str) -> None:
    address, port = server.server_address()
    print(f"viewing {what}", flush=True)
    print(f"viewer URL: {viewer.get_viewer_url()}", flush=True)
    print(f"listening on {address}:{port}; Ctrl-C to stop", flush=True)
    server.serve_forever()


def _data_parser() -> argparse.ArgumentParser:
    """``view_data.py``'s arguments."""
    p = argparse.ArgumentParser(
        prog="view_data.py",
        description="View a whole plate of a packed dataset in neuroglancer: wells in plate\n"
        "layout, sites side by side, channels as layers in RxRx1 colours, well names, and\n"
        "optionally per-well predictions (green correct, red wrong).",
        epilog=DATA_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", required=True, type=Path, help="packed dataset folder")
    p.add_argument("--plate", required=True, help="EXPERIMENT/PlateN, e.g. HEPG2-01/Plate1")
    p.add_argument(
        "--predictions",
        type=Path,
        metavar="PRED_OR_OUT",
        help="a predictions store (03_predict output) or an ensemble output "
        "folder (submission.csv) to overlay",
    )
    p.add_argument(
        "--montage",
        type=Path,
        metavar="PNG",
        help="write a static overview PNG of the plate (no browser needed)",
    )
    p.add_argument(
        "--contrast",
        choices=CONTRASTS,
        default="plate",
        help="channel ranges: the plate's statistics, or rxrx1-utils' fixed ranges",
    )
    p.add_argument(
        "--pixel-size",
        type=float,
        metavar="UM",
        help="pixel size in micrometres, for a physical scale bar",
    )
    p.add_argument(
        "--serve",
        action="store_true",
        help="serve the dataset folder over HTTP (CORS, Range requests) and show the "
        "plate's OME-Zarr fields through neuroglancer's own zarr3:// source",
    )
    p.add_argument("--wells", help="with --serve: only these wells, e.g. B02,C03")
    _serve_arguments(p)
    return p


def view_data_main(argv: Sequence[str] | None = None) -> int:
    """``view_data.py``: a packed plate in neuroglancer, as a PNG, or as a montage.

    Args:
        argv: The command line's arguments (None: ``sys.argv[1:]``).

    Returns:
        The exit status.
    """
    p = _data_parser()
    args = p.parse_args(argv)
    packed = PackedDataset(args.data)
    experiment, plate = parse_plate(args.plate)
    packed.plate(experiment, plate)  # a missing plate: error listing the available ones
    if args.pixel_size is None:
        args.pixel_size = packed.info.pixel_size_um
    if args.serve:
        if args.predictions is not None or args.montage is not None:
            p.error("--serve shows the OME-Zarr fields only: drop --predictions/--montage")
        return _serve_fields(args, packed, experiment, plate)
    calls = None
    if args.predictions is not None:
        calls = load_calls(args.predictions, packed, experiment, plate)
        print(f"{args.plate}: {summarize_calls(calls)}", flush=True)
    if args.montage is not None:
        plate_montage(packed, experiment, plate, args.montage, calls=calls, contrast=args.contrast)
        print(f"wrote {args.montage}", flush=True)
        if args.screenshot is None:
            return 0
    viewer = _viewer(args)
    size = _fit(TileGrid.for_plate(packed.info.plate_shape).shape, args.size)
    # served: framed for a modest browser window, so the whole plate is in view at first
    viewport = size if args.screenshot is not None else (args.size or SERVE_VIEWPORT)
    show_plate(viewer, packed, experiment, plate, calls=calls, contrast=args.contrast,
               pixel_size_um=args.pixel_size, viewport=viewport)  # fmt: skip
    if args.screenshot is not None:
        screenshot(viewer, args.screenshot, size)
        print(f"wrote {args.screenshot}", flush=True)
        return 0
    _serve(viewer, f"{args.plate} of {args.data}")
    return 0


def _serve_fields(args: argparse.Namespace, packed: PackedDataset, experiment: str, plate: int
                  ) -> int:  # fmt: skip
    """``--serve``: the dataset folder over HTTP, a viewer of its ``zarr3://`` fields."""
    wells = comma_list(args.wells, what="--wells") or None
    data = DataServer(args.data, args.bind).start()
    try:
        viewer = _viewer(args)
        size = args.size or (SERVE_VIEWPORT if args.screenshot is None else (1600, 1000))
        show_fields(viewer, packed, experiment, plate, data.url, wells=wells,
                    contrast=args.contrast, viewport=size)  # fmt: skip
        state_url = data.add("/cellblock/state.json", json.dumps(viewer.state.to_json()).encode())
        if args.screenshot is not None:
            screenshot(viewer, args.screenshot, size)
            print(f"wrote {args.screenshot}", flush=True)
            return 0
        print(f"dataset served at {data.url}/ (CORS, Range requests)", flush=True)
        print(f"neuroglancer state (zarr3:// sources) at {state_url}", flush=True)
        _serve(viewer, f"{args.plate} of {args.data} through zarr3://")
    finally:
        data.stop()
    return 0


def view_batch_main(argv: Sequence[str] | None = None) -> int:
    """``view_batch.py``: a training batch snapshot in neuroglancer, or as a PNG."""
    p = argparse.ArgumentParser(
        prog="view_batch.py",
        description="View a training batch snapshot (RUN/snapshots/batch_N.hdf) in "
        "neuroglancer: the inputs as the network saw them, boxed green where its "
        "prediction matched the label and red where not.",
    )
    p.add_argument("snapshot", type=Path, help="RUN/snapshots/batch_N.hdf")
    p.add_argument(
        "--data", type=Path, help="the packed dataset trained on, for its channel names and colours"
    )
    _serve_arguments(p)
    args = p.parse_args(argv)

    snapshot = read_snapshot(args.snapshot)
    info = PackedDataset(args.data).info if args.data is not None else None
    viewer = _viewer(args)
    size = _fit((1000, 1200), args.size)  # a batch lays out about square
    viewport = size if args.screenshot is not None else (args.size or SERVE_VIEWPORT)
    show_snapshot(viewer, snapshot, info, viewport=viewport)
    labelled = snapshot.labels >= 0
    right = int((snapshot.predicted[labelled] == snapshot.labels[labelled]).sum())
    print(
        f"{args.snapshot}: iteration {snapshot.iteration}, {len(snapshot.labels)} items, "
        f"{right}/{int(labelled.sum())} labelled items predicted right",
        flush=True,
    )
    if args.screenshot is not None:
        screenshot(viewer, args.screenshot, size)
        print(f"wrote {args.screenshot}", flush=True)
        return 0
    _serve(viewer, str(args.snapshot))
    return 0
