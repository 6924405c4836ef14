"""Registry specs of the published architectures, by the names the LIIF paper's tables
and checkpoints use (``edsr-baseline-liif.pth``, ``rdn-liif.pth``, ...).

``models.make(PUBLISHED_SPECS['rdn-liif'])`` builds exactly the layout of the published
checkpoint (parameter names, shapes and counts are tested against
``official_state_dicts.json``); benchmarks and tests take their models from here.
"""
MLP_256x4 = {'name': 'mlp', 'args': {'out_dim': 3, 'hidden_list': [256] * 4}}


def _liif(encoder):
    return {'name': 'liif', 'args': {'encoder_spec': {'name': encoder,
                                                      'args': {'no_upsampling': True}},
                                     'imnet_spec': MLP_256x4}}


PUBLISHED_SPECS = {
    'edsr-baseline-liif': _liif('edsr-baseline'),
    'rdn-liif': _liif('rdn'),
    'rcan-liif': _liif('rcan'),
    'edsr-baseline-metasr': {'name': 'metasr', 'args': {
        'encoder_spec': {'name': 'edsr-baseline', 'args': {'no_upsampling': True}}}},
    'edsr-baseline-x2': {'name': 'edsr-baseline', 'args': {'scale': 2}},
    'rdn-x2': {'name': 'rdn', 'args': {'scale': 2}},
}
