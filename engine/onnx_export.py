"""Export a model to ONNX (``scripts/export_onnx.py``): ``encoder.onnx`` (dynamic height
and width), ``query.onnx`` (dynamic window size and number of queries) and ``model.json``,
and check the files against PyTorch with onnxruntime. The graphs are
``engine.onnx_graphs``'s; the format is described in docs/deploy.md.

Exported with PyTorch's current exporter, ``torch.onnx.export(..., dynamo=True)`` (the
default since PyTorch 2.9; the TorchScript exporter, ``dynamo=False``, is deprecated),
with ``dynamic_shapes`` (``torch.export.Dim``; ``dynamic_axes`` belongs to the deprecated
exporter). ``onnx`` and ``onnxscript`` (``requirements-deploy.txt``) are imported here
only when exporting.
"""
import contextlib
import json
import logging
import platform
import warnings
from pathlib import Path

import numpy as np
import torch

from engine.onnx_graphs import export_adapter
from engine.render import prepare, window_margin
from models.cross_scale_attention import TILE_MARGIN
from models.liif_fast import grid_sample_rounding_is_fused
from utils.errors import UserError
from utils.files import atomic_path, write_text_atomic
from utils.onnx_render import FORMAT, FORMAT_VERSION, ExportedModel

# Example sizes the graphs are traced with: distinct and above 1, so that no dimension is
# taken for a constant (the exported dimensions are symbolic, checked by the tests).
EXAMPLE_LR = (24, 20)
EXAMPLE_WINDOW = (9, 7)
EXAMPLE_QUERIES = 13
EXAMPLE_REL_CELL = 0.3
# Sizes and query counts of ``check_export``'s comparison.
CHECK_CASES = ((24, 20, 1000), (13, 31, 257))


def _version(module_name):
    try:
        return __import__(module_name).__version__
    except ImportError:
        return None


@contextlib.contextmanager
def _quiet_exporter():
    """The exporter's progress lines and its notes on optional packages (torchvision)
    are not the user's business: keep them off the terminal."""
    loggers = [logging.getLogger(name) for name in ('torch.onnx', 'onnxscript')]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(None):
        warnings.simplefilter('ignore')
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)


def _export(module, example, dynamic_shapes, input_names, output_names, path, opset):
    """One graph to ``path`` (atomically)."""
    try:
        import onnx  # noqa: F401
        import onnxscript.optimizer
    except ImportError:
        raise UserError('exporting needs onnx and onnxscript: '
                        'pip install -r requirements-deploy.txt') from None
    with _quiet_exporter(), torch.no_grad():
        # optimize=False: onnxscript's optimizer (0.7.2) takes ``x + c`` with |c| <= 1e-8
        # (and ``x * c`` with c within 1e-5 of 1) for a no-op and deletes it: LIIF's 1e-9
        # in the ensemble weights went, and a query on a latent centre became 0/0 = NaN.
        # Its constant folding alone is safe, and leaves no CastLike of constants that
        # onnxruntime could not fold (it warns at every load); onnxruntime optimises
        # the rest of the graph itself when it loads it.
        program = torch.onnx.export(module, example, dynamo=True,
                                    dynamic_shapes=(dynamic_shapes,), input_names=input_names,
                                    output_names=output_names, opset_version=opset,
                                    optimize=False)
        onnxscript.optimizer.fold_constants_ir(program.model)
        onnxscript.optimizer.remove_unused_nodes(program.model)
    with atomic_path(path, suffix='.onnx') as tmp:
        program.save(str(tmp))


def _signature(path):
    """``(inputs, outputs, opset)`` of an ONNX file: names, shapes (a dimension's name when
    it is dynamic) and element types, read back from the file."""
    import onnx
    graph_model = onnx.load(str(path), load_external_data=False)

    def describe(values):
        out = []
        for value in values:
            tensor = value.type.tensor_type
            out.append({'name': value.name,
                        'shape': [d.dim_param or d.dim_value for d in tensor.shape.dim],
                        'dtype': onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name})
        return out
    opset = next(o.version for o in graph_model.opset_import if o.domain in ('', 'ai.onnx'))
    return describe(graph_model.graph.input), describe(graph_model.graph.output), opset


def export(model, spec, out_dir, data_norm, opset=None, scale_max=None, source=None):
    """Write ``encoder.onnx``, ``query.onnx`` and ``model.json`` of ``model`` to ``out_dir``.

    Args:
        model: the model (eval mode, on the CPU), built from registry ``spec``
            (``{'name', 'args'}``).
        data_norm: the ``data_norm`` values it was trained with (recorded; the graphs take
            normalised inputs). opset: ONNX opset (``None``: the exporter's default).
        scale_max: LTE's cell clipping to record as the renderer's default (``None``).
        source: where the weights came from (recorded).
    Returns:
        model.json's content. ``UserError`` (one line) for a model that cannot be exported.
    """
    fused = grid_sample_rounding_is_fused(torch.device('cpu'), torch.float32)
    adapter = export_adapter(spec['name'], model, fused)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dim = torch.export.Dim
    lr = torch.rand(1, 3, *EXAMPLE_LR)
    # LMF's encoder takes the image's cell in latent cells too (a fixed (1, 2))
    extra = (torch.tensor([[EXAMPLE_REL_CELL] * 2]),) * (len(adapter.encoder_inputs) - 1)
    _export(adapter.encoder().eval(), (lr, *extra),
            ({2: dim('height', min=1), 3: dim('width', min=1)},) + (None,) * len(extra),
            list(adapter.encoder_inputs), list(adapter.state_names), out_dir / 'encoder.onnx',
            opset)

    with torch.no_grad():
        states = adapter.encoder()(torch.rand(1, 3, *EXAMPLE_WINDOW), *extra)
    states = states if isinstance(states, tuple) else (states,)
    maps = dict(zip(adapter.state_names, states))       # every state map by name
    # Stages between the encoder and the query (CiaoSR's attention and prepare graphs):
    # state maps in, state maps out. The attention needs 2 cells per side.
    stage_info = {}
    for stage, graph, inputs, outputs in adapter.stages():
        sizes = {1: dim('h', min=2), 2: dim('w', min=2)} if stage == 'attention' else \
            {1: dim('h', min=1), 2: dim('w', min=1)}
        path = out_dir / f'{stage}.onnx'
        _export(graph.eval(), tuple(maps[n] for n in inputs), (sizes,) * len(inputs),
                list(inputs), list(outputs), path, opset)
        with torch.no_grad():
            results = graph(*(maps[n] for n in inputs))
        maps.update(zip(outputs, results if isinstance(results, tuple) else (results,)))
        stage_inputs, stage_outputs, _ = _signature(path)
        stage_info[stage] = {'file': path.name, 'inputs': stage_inputs, 'outputs': stage_outputs}
    if 'attention' in stage_info:       # how the renderer tiles it (the reference's tiles)
        stage_info['attention'].update(tile=model.non_local_tile or None,
                                       margin=TILE_MARGIN)
    states = tuple(maps[n] for n in adapter.query_names)
    coord = torch.rand(1, EXAMPLE_QUERIES, 2) * 2 - 1
    cell = torch.full((1, EXAMPLE_QUERIES, 2), 2 / 30)
    h, w, q = dim('h', min=1), dim('w', min=1), dim('q', min=1)
    shapes = tuple({1: h, 2: w} for _ in states) + ({1: q}, {1: q})
    names = [*adapter.query_names, 'coord', 'cell']
    # Pass graphs (SRNO's): each takes the results of those before it, fixed shapes.
    kvs, passes = [], []
    for k, graph in enumerate(adapter.passes()):
        name = adapter.kv_names[k]
        _export(graph.eval(), (*states, coord, cell, *kvs), shapes + (None,) * len(kvs),
                names + list(adapter.kv_names[:k]), [f'{name}_sum'],
                out_dir / f'pass{k}.onnx', opset)
        with torch.no_grad():
            kvs.append(graph(*states, coord, cell, *kvs) / EXAMPLE_QUERIES)
        passes.append(_signature(out_dir / f'pass{k}.onnx'))
    _export(adapter.query().eval(), (*states, coord, cell, *kvs), shapes + (None,) * len(kvs),
            names + list(adapter.kv_names), ['rgb'], out_dir / 'query.onnx', opset)

    encoder_in, encoder_out, used_opset = _signature(out_dir / 'encoder.onnx')
    query_in, query_out, _ = _signature(out_dir / 'query.onnx')
    radius = model.encoder_radius() if hasattr(model, 'encoder_radius') else None
    info = {
        'format': FORMAT, 'format_version': FORMAT_VERSION,
        'model': {'name': spec['name'], 'args': spec.get('args') or {}},
        'source': None if source is None else str(source),
        'data_norm': data_norm,
        'encoder': {'file': 'encoder.onnx', 'inputs': encoder_in, 'outputs': encoder_out},
        'query': {'file': 'query.onnx', 'inputs': query_in, 'outputs': query_out},
        # SRNO's: run over all the queries of an image, in order, before the query graph
        'passes': [{'file': f'pass{k}.onnx', 'inputs': inputs, 'outputs': outputs}
                   for k, (inputs, outputs, _) in enumerate(passes)],
        # CiaoSR's: 'attention' (run on tiles of the whole image after the encoder) and
        # 'prepare' (run on each decoding window before its queries); absent for the others
        **stage_info,
        'encoder_radius': None if radius is None else radius + adapter.state_radius,
        'window_margin': window_margin(model),
        'scale_max': scale_max,
        'grid_sample_rounding': 'fused' if fused else 'separate',
        'opset': used_opset,
        'versions': {'python': platform.python_version(), 'torch': torch.__version__,
                     'onnx': _version('onnx'), 'onnxscript': _version('onnxscript'),
                     'onnxruntime': _version('onnxruntime')},
    }
    write_text_atomic(out_dir / 'model.json', json.dumps(info, indent=2) + '\n')
    return info


def check_export(model, out_dir, cases=CHECK_CASES, seed=0):
    """Largest absolute difference between onnxruntime (the export in ``out_dir``) and
    PyTorch (``model``'s fast path on the CPU) over random inputs: for each ``(h, w, Q)``
    of ``cases``, a random ``h x w`` normalised input encoded whole and ``Q`` random
    queries with cells of random scales, through the same exported files."""
    exported = ExportedModel(out_dir)
    generator = torch.Generator().manual_seed(seed)
    worst = 0.0
    for h, w, n in cases:
        lr = torch.rand(1, 3, h, w, generator=generator) * 2 - 1
        coord = torch.rand(1, n, 2, generator=generator) * 2 - 1
        cell = 2 / (torch.rand(1, n, 2, generator=generator) * 3 + 1) / torch.tensor([h, w])
        with torch.no_grad():
            # LMF's modulations are made for the image's first query cell (models/lmf.py)
            prepared = prepare(model, model.encode(lr), cell)
            expected = model.query(prepared, coord, cell).numpy()
        rel_cell = (cell[0, :1] * torch.tensor([h, w])).numpy()
        states = exported.prepare(exported.encode(lr.numpy(), rel_cell))
        coord, cell = coord.numpy(), cell.numpy()
        # SRNO: every query attends to all of them, summed over two chunks
        half = n // 2
        kvs = exported.query_state(states, lambda: [(coord[:, :half], cell[:, :half]),
                                                    (coord[:, half:], cell[:, half:])])
        got = exported.query(states, coord, cell, kvs)
        worst = max(worst, float(np.abs(got - expected).max()))
    return worst
