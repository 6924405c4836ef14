"""Registry behaviour, published checkpoint layouts, and a forward/shape test for every
registered model (parametrised over the registry: a new model is tested once it has an
entry in EXAMPLES)."""
import json
from pathlib import Path

import pytest
import torch

import models
from helpers import TINY_ENCODER
from models.published import PUBLISHED_SPECS
from utils.coords import make_cell
from utils.errors import UserError

SPEC_DIR = Path(__file__).resolve().parents[2] / 'shared' / 'spec'
# Parameter names/shapes of the published checkpoints, LIIF's and LTE's; a copy of the
# counts lives here so the test also runs where ../shared is absent.
PUBLISHED_COUNTS = {'edsr-baseline-liif': 1567323, 'rdn-liif': 22320835,
                    'edsr-baseline-metasr': 1665560, 'edsr-baseline-x2': 1369883,
                    'rdn-x2': 22123395, 'rcan-liif': 15642107}
LTE_COUNTS = {'edsr-baseline-lte': 1714267, 'rdn-lte': 22467779, 'swinir-lte': 12096871,
              'edsr-baseline-lte-fast': 1714267, 'swinir-liif': 11949927,
              'swinir-metasr': 12048164}
SRNO_COUNTS = {'edsr-baseline-srno': 2015323, 'rdn-srno': 22768835}
# LMF's, and CiaoSR as LMF's port builds it (family_state_dicts.json)
LMF_COUNTS = {'edsr-baseline-lmliif': 1386091, 'rdn-lmliif': 22139603, 'swinir-lmliif': 11782615,
              'edsr-baseline-lmlte': 1490907, 'rdn-lmlte': 22244419, 'swinir-lmlte': 11873511}
CIAOSR_COUNTS = {'edsr-baseline-ciaosr': 2649054, 'rdn-ciaosr': 23402566,
                 'swinir-ciaosr': 13031658,
                 'edsr-baseline-lmciaosr': 1955438, 'rdn-lmciaosr': 22708950,
                 'swinir-lmciaosr': 12338042}
SPEC_FILES = {**{key: SPEC_DIR / 'official_state_dicts.json' for key in PUBLISHED_COUNTS},
              **{key: SPEC_DIR / 'lte_state_dicts.json' for key in LTE_COUNTS},
              **{key: SPEC_DIR / 'family_state_dicts.json'
                 for key in {**SRNO_COUNTS, **LMF_COUNTS, **CIAOSR_COUNTS}}}
ENCODERS = ('edsr-baseline', 'edsr', 'rdn', 'rcan')
TINY_SWINIR = {'name': 'swinir', 'args': {'img_size': 16, 'embed_dim': 12, 'depths': [2, 2],
                                          'num_heads': [2, 3], 'window_size': 4}}
TINY_MLP = {'name': 'mlp', 'args': {'out_dim': 3, 'hidden_list': [16]}}
TINY_LMMLP = {'name': 'lmmlp', 'args': {'out_dim': 3, 'hidden_dim': 4, 'hidden_depth': 2}}
TINY_HYPERNET = {'name': 'mlp', 'args': {'out_dim': 0, 'hidden_list': [12]}}  # out_dim: set
# name -> list of (args, kind); kind says how to call the model and what comes out.
EXAMPLES = {
    **{name: [({'no_upsampling': True}, 'features')] +
       [({'scale': s}, f'upsample{s}') for s in (2, 3, 4)] for name in ENCODERS},
    'mlp': [({'in_dim': 5, 'out_dim': 3, 'hidden_list': [16, 16]}, 'vector')],
    'lmmlp': [({'in_dim': 5, 'out_dim': 3, 'hidden_dim': 8, 'hidden_depth': 2, **mods}, 'vector')
              for mods in ({}, {'mod_shift': False}, {'use_conv': True})],
    'liif': [({'encoder_spec': TINY_ENCODER,
               'imnet_spec': {'name': 'mlp', 'args': {'out_dim': 3, 'hidden_list': [16]}},
               **switches}, 'implicit')
             for switches in ({}, {'local_ensemble': False}, {'feat_unfold': False},
                              {'cell_decode': False})]
            + [({'encoder_spec': TINY_ENCODER}, 'implicit-features')],
    'metasr': [({'encoder_spec': TINY_ENCODER}, 'implicit')],
    'swinir': [(TINY_SWINIR['args'], 'features'),
               ({**TINY_SWINIR['args'], 'resi_connection': '3conv', 'img_size': 8,
                 'window_size': 8}, 'features')],
    'lte': [({'encoder_spec': encoder, 'imnet_spec': TINY_MLP, 'hidden_dim': 8}, 'implicit')
            for encoder in (TINY_ENCODER, TINY_SWINIR)],
    'lte-fast': [({'encoder_spec': TINY_ENCODER, 'num_layer': 1, 'hidden_dim': 8}, 'implicit'),
                 ({'encoder_spec': TINY_ENCODER, 'num_layer': 1, 'hidden_dim': 8}, 'grid')],
    'lmliif': [({'encoder_spec': TINY_ENCODER, 'imnet_spec': TINY_LMMLP, 'hypernet_spec': TINY_HYPERNET,
                 **switches}, 'implicit')
               for switches in ({}, {'mod_input': True}, {'local_ensemble': False},
                                {'feat_unfold': False}, {'cell_decode': False})],
    'lmlte': [({'encoder_spec': encoder, 'imnet_spec': TINY_LMMLP, 'hypernet_spec': TINY_HYPERNET,
                'hidden_dim': 8, **switches}, 'implicit')
              for encoder, switches in ((TINY_ENCODER, {}), (TINY_SWINIR, {'mod_input': True}),
                                        (TINY_ENCODER, {'local_ensemble': False}),
                                        (TINY_ENCODER, {'cell_decode': False}))],
    'sronet': [({'encoder_spec': TINY_ENCODER, 'width': 16, 'blocks': 4}, kind)
               for kind in ('implicit', 'grid')],
    'galerkin': [({'midc': 12, 'heads': 3}, 'attention')],
    'ciaosr': [({'encoder': TINY_ENCODER, 'imnet_q': TINY_MLP, 'imnet_k': TINY_MLP,
                 'imnet_v': TINY_MLP, **switches}, 'implicit')
               for switches in ({}, {'local_size': 3, 'multi_scale': [2, 3]},
                                {'feat_unfold': False, 'non_local_attn': False})],
    'lmciaosr': [({'encoder': TINY_ENCODER, 'prenet_q': TINY_MLP, 'hypernet_q': TINY_HYPERNET,
                   'imnet_q': TINY_LMMLP, 'imnet_k': TINY_MLP, 'imnet_v': TINY_MLP,
                   **switches}, 'implicit')
                 for switches in ({}, {'mod_input': True, 'multi_scale': [2, 3]},
                                  {'non_local_attn': False})],
    'bicubic': [({}, 'implicit'), ({'data_norm': {'inp': {'sub': [0.5], 'div': [0.5]},
                                                  'gt': {'sub': [0.5], 'div': [0.5]}}},
                                   'implicit')],
}


def test_every_registered_model_has_examples():
    assert sorted(models.models) == sorted(EXAMPLES), 'add an EXAMPLES entry for new models'


@pytest.mark.parametrize('name,args,kind', [
    (name, args, kind) for name, cases in EXAMPLES.items() for args, kind in cases])
def test_forward_shapes(name, args, kind):
    model = models.make({'name': name, 'args': args})
    with torch.no_grad():
        if kind == 'vector':
            assert model(torch.randn(2, 7, 5)).shape == (2, 7, 3)
            return
        if kind == 'attention':    # SRNO's layer on a (B, C, H, W) map
            x = torch.randn(2, args['midc'], 6, 5)
            assert model(x).shape == x.shape and torch.isfinite(model(x)).all()
            return
        lr = torch.randn(2, 3, 6, 5)
        if kind == 'features':
            out = model(lr)
            assert out.shape == (2, model.out_dim, 6, 5) and model.out_dim > 3
        elif kind.startswith('upsample'):
            s = int(kind[-1])
            assert model(lr).shape == (2, 3, 6 * s, 5 * s)
        elif kind == 'grid':   # LTE+'s grid call: (B, H, W, 2) queries, one cell per image
            coord = torch.rand(2, 4, 7, 2) * 2 - 1
            out = model(lr, coord, torch.full((2, 2), 0.1))
            assert out.shape == (2, 3, 4, 7) and torch.isfinite(out).all()
        else:
            coord = torch.rand(2, 11, 2) * 2 - 1
            out = model(lr, coord, make_cell(coord, (24, 20)))
            width = 8 if kind == 'implicit-features' else 3
            assert out.shape == (2, 11, width)
            assert torch.isfinite(out).all()


def test_published_specs_are_the_published_models():
    assert sorted(PUBLISHED_SPECS) == sorted({**PUBLISHED_COUNTS, **LTE_COUNTS, **SRNO_COUNTS,
                                              **LMF_COUNTS,
                                              **CIAOSR_COUNTS})


@pytest.mark.parametrize('key', sorted(PUBLISHED_SPECS))
def test_published_specs_have_exact_layout(key):
    with torch.device('meta'):  # full size, shapes only: no memory, no init time
        model = models.make(PUBLISHED_SPECS[key])
    counts = {**PUBLISHED_COUNTS, **LTE_COUNTS, **SRNO_COUNTS, **LMF_COUNTS, **CIAOSR_COUNTS}
    assert sum(p.numel() for p in model.parameters()) == counts[key]
    spec_file = SPEC_FILES[key]
    if not spec_file.is_file():
        pytest.skip(f'{spec_file} absent: parameter count checked, names not')
    published = json.loads(spec_file.read_text())[key]
    assert published['spec'] == PUBLISHED_SPECS[key]
    # official_state_dicts.json maps names to shapes, the others list pairs
    expected = published['state_dict']
    expected = [[name, shape] for name, shape in
                (expected.items() if isinstance(expected, dict) else expected)]
    shapes = [[name, list(t.shape)] for name, t in model.state_dict().items()]
    assert shapes == expected                                # names, order and shapes
    # a state dict with the published names and shapes loads strictly
    sd = {name: torch.empty(shape, device='meta') for name, shape in expected}
    result = model.load_state_dict(sd, strict=True, assign=True)  # raises on any mismatch
    assert not result.missing_keys and not result.unexpected_keys


def test_mean_shift_layers_are_fixed_and_not_trainable():
    model = models.make({'name': 'edsr-baseline', 'args': {'no_upsampling': True}})
    assert not model.sub_mean.weight.requires_grad
    assert torch.allclose(model.sub_mean.bias, -torch.tensor([0.4488, 0.4371, 0.4040]))
    assert torch.allclose(model.add_mean.bias, torch.tensor([0.4488, 0.4371, 0.4040]))


def test_unknown_name_lists_registered_names():
    with pytest.raises(UserError) as e:
        models.make({'name': 'edsr-basline', 'args': {}})
    msg = str(e.value)
    assert "'edsr-basline'" in msg and 'edsr-baseline' in msg and 'liif' in msg


def test_unknown_argument_lists_valid_ones():
    with pytest.raises(UserError) as e:
        models.make({'name': 'edsr-baseline', 'args': {'n_resblock': 4}})
    assert 'n_resblock' in str(e.value) and 'n_resblocks' in str(e.value)


def test_duplicate_registration_is_an_error():
    with pytest.raises(UserError, match='registered twice'):
        models.register('mlp')(object)


def test_make_with_args_override_and_load_sd():
    spec = {'name': 'mlp', 'args': {'in_dim': 4, 'out_dim': 2, 'hidden_list': [3]}}
    model = models.make(spec, args={'out_dim': 5})
    assert model.out_dim == 5 and spec['args']['out_dim'] == 2  # spec untouched
    saved = {**spec, 'sd': models.make(spec).state_dict()}
    loaded = models.make(saved, load_sd=True)
    for name, t in saved['sd'].items():
        assert torch.equal(loaded.state_dict()[name], t)


def test_bad_upsampling_scale_is_a_clear_error():
    with pytest.raises(UserError, match='scale'):
        models.make({'name': 'rdn', 'args': {'scale': 5}})


def test_mlp_and_plain_query_accept_zero_queries():
    mlp = models.make({'name': 'mlp', 'args': {'in_dim': 5, 'out_dim': 3, 'hidden_list': [4]}})
    assert mlp(torch.zeros(2, 0, 5)).shape == (2, 0, 3)
    model = models.make({'name': 'liif', 'args': {
        'encoder_spec': TINY_ENCODER,
        'imnet_spec': {'name': 'mlp', 'args': {'out_dim': 3, 'hidden_list': [8]}}}})
    model.query_impl = 'plain'
    coord = torch.zeros(1, 0, 2)
    assert model.query(torch.rand(1, 8, 4, 4), coord, coord.clone()).shape == (1, 0, 3)
