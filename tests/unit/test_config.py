"""Settings: Neutron's option names in an INI file, flags on top, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from netmeta.cli.main import build_parser, config_from
from netmeta.config import Config, ConfigError, RateLimitConfig, load, parse

DHCP_AGENT_INI = """
[DEFAULT]
# as in Neutron's dhcp_agent.ini
enable_isolated_metadata = True
dhcp_lease_duration = 600
metadata_proxy_shared_secret = s3cret

[metadata_rate_limiting]
rate_limit_enabled = true
base_query_rate_limit = 5
ip_versions = 4, 6
"""


def test_parse_reads_neutron_names() -> None:
    config = parse(DHCP_AGENT_INI)
    assert config.enable_isolated_metadata is True
    assert config.force_metadata is False
    assert config.dhcp_lease_duration == 600
    assert config.metadata_proxy_shared_secret == "s3cret"
    assert config.rate_limiting == RateLimitConfig(
        rate_limit_enabled=True, base_query_rate_limit=5, ip_versions=(4, 6)
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[DEFAULT]\nenable_isolated_metadta = True\n", "unknown option 'enable_isolated_metadta'"),
        ("[DEFAULT]\nforce_metadata = maybe\n", "expected true or false"),
        ("[DEFAULT]\ndhcp_lease_duration = a day\n", "expected an integer"),
        ("[DEFAULT]\ndhcp_lease_duration = 0\n", "dhcp_lease_duration must be positive"),
        ("[DEFAULT]\nmetadata_port = 70000\n", "metadata_port"),
        ("[DEFAULT]\nimds_tokens = sometimes\n", "imds_tokens"),
        ("[DEFAULT]\nmetadata_access_mark = mark\n", "metadata_access_mark"),
        ("[DEFAULT]\nmetadata_listen = 127.0.0.1\n", "metadata_listen needs metadata_proxy_shared_secret"),
        ("[DEFAULT]\nmetadata_access_mark = 0x10000\n", "metadata_access_mark"),
        ("[agent]\nx = 1\n", "unknown section [agent]"),
        ("enable_isolated_metadata = True\n", "cannot parse config"),
    ],
)
def test_bad_settings_are_named(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse(text)


def test_flags_override_the_file(tmp_path: Path) -> None:
    ini = tmp_path / "dhcp_agent.ini"
    ini.write_text(DHCP_AGENT_INI)
    args = build_parser().parse_args(
        ["agent", "--config", str(ini), "--no-enable-isolated-metadata", "--force-metadata", "--state-dir", "/x"]
    )
    config = config_from(args)
    assert config.enable_isolated_metadata is False
    assert config.force_metadata is True
    assert config.dhcp_lease_duration == 600  # from the file, not overridden
    assert config.state_dir == "/x"
    assert config.db_url == "sqlite:////x/netmeta.sqlite"


def test_state_dir_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # dnsmasq chdir()s to / when it daemonizes: a relative path would point elsewhere.
    monkeypatch.chdir(tmp_path)
    assert Config(state_dir="st").state_dir == str(tmp_path / "st")


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load(str(tmp_path / "nope.ini"))


def test_defaults_match_neutron() -> None:
    config = Config()
    assert (config.enable_isolated_metadata, config.force_metadata) == (False, False)
    assert config.dhcp_lease_duration == 86400
    assert config.metadata_port == 9697
    assert config.enable_metadata_proxy is True
    # Not Neutron's (off; 10 per 10 s when on, which one cloud-init crawl exceeds): on, and above any boot.
    limits = config.rate_limiting
    assert limits.rate_limit_enabled is True
    assert (limits.base_window_duration, limits.base_query_rate_limit) == (10, 1000)
    assert (limits.burst_window_duration, limits.burst_query_rate_limit) == (1, 400)
