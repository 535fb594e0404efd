"""The agent's side of TLS and tokens (agent/tls.py), with certificates made at test time."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from agent.config import load_config
from agent.errors import ConfigError
from agent.tls import AgentTlsConfig, ChannelSecurity, TlsFilesError
from tests.fleet import lab_pki


def test_config_check_and_renewal_failures(tmp_path: Path) -> None:
    pki = lab_pki(tmp_path)
    n1, n2 = pki.node("n1"), pki.node("n2")
    cfg = tmp_path / "agent.yml"
    cfg.write_text(f"node: n1\ntls: {{ca: {pki.ca}, cert: {n1.cert}, key: {n1.key}}}\n"
                   "auth_token: {env: FLEETMON_TEST_AGENT_TOKEN}\n")
    with pytest.raises(ConfigError, match="auth_token: environment variable FLEETMON_TEST_AGENT_TOKEN is not set"):
        load_config(cfg)
    cfg.write_text(f"node: n1\ntls: {{ca: {pki.ca}, cert: {n1.cert}}}\n")
    with pytest.raises(ConfigError, match="tls: cert and key go together"):
        load_config(cfg)
    ChannelSecurity(AgentTlsConfig(pki.ca, n1.cert, n1.key), None).check()
    with pytest.raises(ConfigError, match=r"n2\.key does not go with .*n1\.crt"):
        ChannelSecurity(AgentTlsConfig(pki.ca, n1.cert, n2.key), None).check()
    with pytest.raises(ConfigError, match=r"tls\.ca: .*missing\.crt: No such file"):
        ChannelSecurity(AgentTlsConfig(tmp_path / "missing.crt", None, None), None).check()
    # a file that goes away while the agent runs is a failed connection (retried), not a crash
    gone = tmp_path / "gone.key"
    gone.write_bytes(n1.key.read_bytes())
    security = ChannelSecurity(AgentTlsConfig(pki.ca, n1.cert, gone), None)
    gone.unlink()
    with pytest.raises(TlsFilesError, match=r"tls\.key: cannot read"):
        security.context()
    assert issubclass(TlsFilesError, OSError)


def test_token_metadata_and_hints(tmp_path: Path) -> None:
    pki = lab_pki(tmp_path)
    n1 = pki.node("n1")
    cfg = tmp_path / "agent.yml"
    (tmp_path / "tok").write_text("agent-t0ken\n")
    cfg.write_text(f"node: n1\nauth_token: {{file: {tmp_path / 'tok'}}}\n")
    loaded = load_config(cfg)
    security = ChannelSecurity(loaded.tls, loaded.auth_token)
    assert security.metadata() == (("authorization", "Bearer agent-t0ken"),)
    assert "agent-t0ken" not in repr(loaded)
    with_cert = ChannelSecurity(AgentTlsConfig(pki.ca, n1.cert, n1.key), None)
    hint = with_cert.explain("UNAVAILABLE: failed to connect to all addresses; ...: Socket closed")
    assert "the collector refused" in hint and str(n1.cert) in hint
    assert "set tls:" in ChannelSecurity(None, None).explain("UNAVAILABLE: Ssl handshake failed")

    context = with_cert.context()  # the files read now, ALPN h2 for gRPC
    assert context is not None and context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ChannelSecurity(None, None).context() is None
