"""The fixtures give the checkpoint that --model names, identified by a fingerprint of its files."""


def test_model_loads(ftmodel):
    # The fixture loads the checkpoint (in eval mode) the first time. Once these very files have
    # loaded, with the cache on, it loads them only when a test needs more than cached scores and
    # answers: a warm run whose results are all cached never loads the model.
    assert len(ftmodel.fingerprint) == 16


def test_base_model_is_another_checkpoint(ftmodel, base_model):
    assert base_model.fingerprint != ftmodel.fingerprint
