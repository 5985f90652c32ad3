"""The fixtures load the checkpoint once, in eval mode, with a fingerprint."""


def test_model_loads(ftmodel):
    assert len(ftmodel.fingerprint) == 16
    if ftmodel.kind != "served":  # a served model's weights live on the server
        assert not ftmodel.model.training


def test_base_model_is_another_checkpoint(ftmodel, base_model):
    assert base_model.fingerprint != ftmodel.fingerprint
