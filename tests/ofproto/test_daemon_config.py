"""The daemon's TOML config: good files parse, bad ones name file, key and value."""

from __future__ import annotations

from pathlib import Path

import pytest

from dpif.errors import ParseError
from offload.datapath import Policy
from ofproto.daemon_config import default_socket_path, load_config, parse_config
from ofproto.normal import VlanMode

GOOD = """
bridge = "br0"
policy = "none"
netns = "fpsw"
flow_limit = 5000
max_idle_ms = 2000
revalidate_interval_ms = 200
socket = "/tmp/x/br0.sock"
rules = "br0.rules"
eswitch_check = false

[[port]]
number = 1
netdev = "p1"
vlan_mode = "access"
tag = 10

[[port]]
number = 2
netdev = "p2"
trunks = [10, 20]
flood = false
"""


def test_good_config() -> None:
    c = parse_config(GOOD, "/etc/flowpath/br0.toml")
    assert c.bridge == "br0" and c.policy is Policy.NONE and c.netns == "fpsw"
    assert c.flow_limit == 5000 and c.socket == "/tmp/x/br0.sock"
    assert c.max_idle_ms == 2000 and c.revalidate_interval_ms == 200
    assert c.rules == "/etc/flowpath/br0.rules" and c.eswitch_check is False
    p1, p2 = c.ports
    assert (p1.config.number, p1.netdev, p1.config.vlan_mode, p1.config.tag) == \
        (1, "p1", VlanMode.ACCESS, 10)
    assert p2.config.vlan_mode is VlanMode.TRUNK and p2.config.trunks == {10, 20}
    assert p2.config.flood is False


def test_defaults() -> None:
    c = parse_config('bridge = "brx"\n[[port]]\nnumber = 3\nnetdev = "eth3"\n', "f.toml")
    assert c.policy is Policy.SKIP_SW and c.netns is None and c.rules is None
    assert c.socket == default_socket_path("brx") == "/run/flowpath/brx.sock"
    assert c.eswitch_check is True
    assert (c.flow_limit, c.max_idle_ms, c.revalidate_interval_ms) == (200_000, 10_000, 500)


@pytest.mark.parametrize("text, key, words", [
    ('bridge = "br0"\npolicy = "skip-sw"\n[[port]]\nnumber=1\nnetdev="p1"', "policy",
     "skip_sw, none, skip_hw"),
    ('bridge = "br0"\n[[port]]\nnumber=1\nnetdev="p1"\nvlan_mode="acess"',
     "port[0].vlan_mode", "access or trunk"),
    ('bridge = "br0"\n[[port]]\nnumber=0\nnetdev="p1"', "port[0].number", "out of range"),
    ('bridge = "br0"\n[[port]]\nnumber="1"\nnetdev="p1"', "port[0].number", "integer"),
    ('bridge = "br0"\n[[port]]\nnumber=1\nnetdev="p1"\ntag=5000', "port[0].tag",
     "out of range"),
    ('bridge = "br0"\n[[port]]\nnumber=1\nnetdev="p1"\nvlan_mode="access"\ntag=5\n'
     '[[port]]\nnumber=1\nnetdev="p2"', "port[1].number", "used twice"),
    ('bridge = "br0"\nflow_limt = 5\n[[port]]\nnumber=1\nnetdev="p1"', "flow_limt",
     "unknown key"),
    ('bridge = "br0"', "port", "at least one"),
    ('bridge = "br0"\nmax_idle_ms = 50\n[[port]]\nnumber=1\nnetdev="p1"', "max_idle_ms",
     "out of range 100.."),
    ('bridge = "br0"\nmax_idle_ms = true\n[[port]]\nnumber=1\nnetdev="p1"', "max_idle_ms",
     "integer"),
    ('bridge = "br0"\nrevalidate_interval_ms = "1s"\n[[port]]\nnumber=1\nnetdev="p1"',
     "revalidate_interval_ms", "integer"),
    ('bridge = "br0"\nflow_limit = 0\n[[port]]\nnumber=1\nnetdev="p1"', "flow_limit",
     "out of range"),
    ('policy = "none"\n[[port]]\nnumber=1\nnetdev="p1"', "bridge", "missing"),
    ('bridge = "br0"\n[[port]]\nnumber=1\nnetdev="a-very-long-netdev-name"', "port[0].netdev",
     "not a valid name"),
    ('bridge = "br0"\n[[port]]\nnumber=1\nnetdev="p1"\ntag=3', "port[0].tag",
     "access ports"),
])
def test_bad_config_names_file_key_value(text: str, key: str, words: str) -> None:
    with pytest.raises(ParseError) as ei:
        parse_config(text, "/etc/flowpath/br0.toml")
    msg = str(ei.value)
    assert "\n" not in msg
    assert "file=/etc/flowpath/br0.toml" in msg and f"key={key}" in msg and words in msg


def test_bad_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ParseError, match="not valid TOML.*file=x.toml"):
        parse_config("bridge = ", "x.toml")
    with pytest.raises(ParseError, match="cannot read.*file="):
        load_config(str(tmp_path / "nope.toml"))
    f = tmp_path / "c.toml"
    f.write_text('bridge = "b"\n[[port]]\nnumber=1\nnetdev="p1"\n')
    assert load_config(str(f)).bridge == "b"
