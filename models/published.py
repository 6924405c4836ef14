"""Registry specs of the published architectures, by the names of their checkpoints:
LIIF's (``edsr-baseline-liif.pth``, ``rdn-liif.pth``, ...), LTE's
(``edsr-baseline-lte.pth``, ``swinir-lte.pth``, the SwinIR-LIIF/-MetaSR baselines, ...),
SRNO's (EDSR-baseline-SRNO, RDN-SRNO) and LMF's (``edsr-baseline-lmliif`` ...
``swinir-lmlte``, the reference's ``edsr-b_lm-liif.pth`` etc.); CiaoSR's as LMF's
plain-PyTorch port builds them (``edsr-baseline-ciaosr``, ...).

``models.make(PUBLISHED_SPECS['rdn-liif'])`` builds exactly the layout of the published
checkpoint (parameter names, shapes and counts are tested against
``official_state_dicts.json``, ``lte_state_dicts.json`` and ``family_state_dicts.json``);
benchmarks and tests take their models from here.
"""
MLP_256x4 = {'name': 'mlp', 'args': {'out_dim': 3, 'hidden_list': [256] * 4}}
MLP_256x3 = {'name': 'mlp', 'args': {'out_dim': 3, 'hidden_list': [256] * 3}}


def _encoder(name):
    return {'name': name, 'args': {'no_upsampling': True}}


def _liif(encoder):
    return {'name': 'liif', 'args': {'encoder_spec': _encoder(encoder), 'imnet_spec': MLP_256x4}}


def _metasr(encoder):
    return {'name': 'metasr', 'args': {'encoder_spec': _encoder(encoder)}}


def _lte(encoder):
    return {'name': 'lte', 'args': {'encoder_spec': _encoder(encoder), 'imnet_spec': MLP_256x3,
                                    'hidden_dim': 256}}


def _lm(name, encoder, hidden_depth, hypernet_width, **args):
    """LMF's LM-LIIF / LM-LTE as its configs build them (``hypernet_spec.out_dim`` is the
    config's value; the model replaces it, as the reference does)."""
    return {'name': name, 'args': {
        'encoder_spec': _encoder(encoder),
        'imnet_spec': {'name': 'lmmlp', 'args': {'out_dim': 3, 'hidden_dim': 16,
                                                 'hidden_depth': hidden_depth,
                                                 'mod_scale': True, 'mod_shift': True}},
        'hypernet_spec': {'name': 'mlp', 'args': {'out_dim': hypernet_width,
                                                  'hidden_list': [hypernet_width]}},
        **args}}


def _lmliif(encoder, hidden_depth=6):
    return _lm('lmliif', encoder, hidden_depth, 208, local_ensemble=True, feat_unfold=True,
               cell_decode=True, mod_input=True)


def _lmlte(encoder):
    return _lm('lmlte', encoder, 8, 288, hidden_dim=128, local_ensemble=True, cell_decode=True,
               mod_input=True)


def _srno(encoder):
    return {'name': 'sronet', 'args': {'encoder_spec': _encoder(encoder), 'width': 256,
                                       'blocks': 16}}


def _ciaosr(encoder):
    """CiaoSR's published configs (caojiezhang/CiaoSR): MLPs of four hidden layers of 256;
    the cross-scale attention at scale 2 (LMF's LM-CiaoSR config)."""
    mlp = {'name': 'mlp', 'args': {'out_dim': 256, 'hidden_list': [256] * 4}}
    return {'name': 'ciaosr', 'args': {
        'encoder': _encoder(encoder), 'imnet_q': {**MLP_256x4}, 'imnet_k': mlp, 'imnet_v': mlp,
        'local_size': 2, 'feat_unfold': True, 'non_local_attn': True, 'multi_scale': [2],
        'softmax_scale': 1}}


def _lmciaosr(encoder):
    """LMF's ``train_*-lmciaosr.yaml`` (the same model for every encoder)."""
    mlp = {'name': 'mlp', 'args': {'out_dim': 256, 'hidden_list': [256]}}
    return {'name': 'lmciaosr', 'args': {
        'encoder': _encoder(encoder),
        'prenet_q': mlp,
        'hypernet_q': {'name': 'mlp', 'args': {'out_dim': 288, 'hidden_list': [288]}},
        'imnet_q': {'name': 'lmmlp', 'args': {'out_dim': 3, 'hidden_dim': 16, 'hidden_depth': 8,
                                              'mod_scale': True, 'mod_shift': True}},
        'imnet_k': mlp, 'imnet_v': mlp, 'local_size': 2, 'feat_unfold': True,
        'non_local_attn': True, 'multi_scale': [2], 'softmax_scale': 1, 'mod_input': True}}


PUBLISHED_SPECS = {
    # LIIF's (yinboc/liif)
    'edsr-baseline-liif': _liif('edsr-baseline'),
    'rdn-liif': _liif('rdn'),
    'rcan-liif': _liif('rcan'),
    'edsr-baseline-metasr': _metasr('edsr-baseline'),
    'edsr-baseline-x2': {'name': 'edsr-baseline', 'args': {'scale': 2}},
    'rdn-x2': {'name': 'rdn', 'args': {'scale': 2}},
    # LTE's (jaewon-lee-b/lte)
    'edsr-baseline-lte': _lte('edsr-baseline'),
    'rdn-lte': _lte('rdn'),
    'swinir-lte': _lte('swinir'),
    'edsr-baseline-lte-fast': {'name': 'lte-fast', 'args': {
        'encoder_spec': _encoder('edsr-baseline'), 'num_layer': 3, 'hidden_dim': 256,
        'out_dim': 3}},
    'swinir-liif': _liif('swinir'),
    'swinir-metasr': _metasr('swinir'),
    # LMF's (HeZongyao/LMF: edsr-b_lm-liif.pth, edsr-b_lm-lte.pth and the rest)
    'edsr-baseline-lmliif': _lmliif('edsr-baseline'),
    'rdn-lmliif': _lmliif('rdn'),
    'swinir-lmliif': _lmliif('swinir', hidden_depth=8),
    'edsr-baseline-lmlte': _lmlte('edsr-baseline'),
    'rdn-lmlte': _lmlte('rdn'),
    'swinir-lmlte': _lmlte('swinir'),
    # SRNO's (2y7c3/Super-Resolution-Neural-Operator)
    'edsr-baseline-srno': _srno('edsr-baseline'),
    'rdn-srno': _srno('rdn'),
    # CiaoSR's, as LMF's port (HeZongyao/LMF) builds them
    'edsr-baseline-ciaosr': _ciaosr('edsr-baseline'),
    'rdn-ciaosr': _ciaosr('rdn'),
    'swinir-ciaosr': _ciaosr('swinir'),
    # LMF's LM-CiaoSR (HeZongyao/LMF configs/train-lmf/train_*-lmciaosr.yaml)
    'edsr-baseline-lmciaosr': _lmciaosr('edsr-baseline'),
    'rdn-lmciaosr': _lmciaosr('rdn'),
    'swinir-lmciaosr': _lmciaosr('swinir'),
}
