from cri import config, config_reload


def test_plan_splits_live_keys_from_restart_keys():
    old = config.Config()
    new = config.Config()
    new.log_level = "debug"
    new.images.pinned_images = ["x"]
    new.registries = {"docker.io": config.RegistryHostConfig(mirrors=["m.example"])}
    new.streaming.port = 1234
    p = config_reload.plan(old.to_dict(), new.to_dict())
    assert {"log_level", "images.pinned_images", 'registries."docker.io".mirrors'} <= set(p.live)
    assert all(k.startswith(("log_level", "images.pinned_images", "registries")) for k in p.live)
    assert p.restart == ["streaming.port"]
    assert not config_reload.plan(old.to_dict(), config.Config().to_dict()).changed


def test_a_removed_registry_is_a_live_change():
    old = config.Config(registries={"q.io": config.RegistryHostConfig(insecure=True)})
    p = config_reload.plan(old.to_dict(), config.Config().to_dict())
    assert p.live and not p.restart
