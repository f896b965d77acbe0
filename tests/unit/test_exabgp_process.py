"""The environment ExaBGP is started with (docs/bgp.md): the settings the agent relies on."""

from __future__ import annotations

from bgplb.bgp.process import exabgp_env


def test_exabgp_env_sets_what_the_agent_relies_on() -> None:
    env = exabgp_env()
    assert env["exabgp_api_ack"] == "true"  # the speaker waits for "done" per command
    assert env["exabgp_api_cli"] == "false"  # no named pipes in ExaBGP's run directory
    assert env["exabgp_daemon_daemonize"] == "false"  # the agent supervises its pid
    assert env["exabgp_tcp_bind"] == ""  # no global listener on 179: outbound sessions only
    assert env["exabgp_log_destination"] == "stdout"  # captured into the agent's log
    # idle poll of 50 ms instead of 10: ~0.9 -> ~0.3 % of a core beside 1,000 services
    # (bench/NOTES.md fix 11); API input still ends the poll at once (test-bgp timings)
    assert float(env["exabgp_reactor_speed"]) == 5.0
    assert env["PYTHONUNBUFFERED"] == "1"  # its log lines reach us as they are written
