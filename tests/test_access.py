"""Unit tests of nic_cache.access: the cache's own tokens and the per-repository records."""

from __future__ import annotations

from pathlib import Path

import pytest

from nic_cache.access import TOKEN_TTL, Access
from nic_cache.config import load_config
from nic_cache.errors import Unauthorized
from nic_cache.reference import Route
from nic_cache.store import Store
from nic_cache.upstream import Upstreams
from tests.support.clock import FakeClock


@pytest.fixture
def access(tmp_path: Path, clock: FakeClock) -> Access:
    config = load_config(f"data_dir: {tmp_path}\nupstreams: {{lab.io: 'http://127.0.0.1:9'}}\n", {})
    store = Store(str(tmp_path), clock=clock)
    return Access(config, store, Upstreams(config), clock=clock)


class TestTokens:
    def test_a_token_gives_back_the_credential_it_wraps(self, access: Access) -> None:
        """The token endpoint's token, sent as Bearer, stands for the basic credential given."""
        token = access.issue_token("Basic YWxpY2U6cHc=")["token"]
        assert access.credential(f"Bearer {token}").basic == ("alice", "pw")
        assert access.credential(f"Bearer {access.issue_token('')['token']}").anonymous

    def test_expired_or_tampered_tokens_are_refused(self, access: Access, clock: FakeClock) -> None:
        """A token past its TTL or with a changed body is a 401, never another credential."""
        token = str(access.issue_token("Basic YWxpY2U6cHc=")["token"])
        body, _, sig = token.rpartition(".")
        with pytest.raises(Unauthorized):
            access.credential(f"Bearer {body[:-2]}xx.{sig}")
        clock.now += TOKEN_TTL + 1
        with pytest.raises(Unauthorized, match="expired"):
            access.credential(f"Bearer {token}")

    def test_foreign_bearer_tokens_pass_through(self, access: Access) -> None:
        """A bearer token the cache did not issue is forwarded upstream as it came."""
        assert access.credential("Bearer upstream-token").bearer == "Bearer upstream-token"


class TestReferences:
    def test_a_blob_is_referenced_only_through_its_repository(self, access: Access) -> None:
        """A blob of a manifest recorded for repository a (directly or through an index) is
        referenced for a, not for b."""
        access.store.link_manifest("sha256:" + "1" * 64, ["sha256:" + "2" * 64])
        access.store.link_manifest("sha256:" + "2" * 64, ["sha256:" + "3" * 64])
        access.record("lab.io", "team/a", "sha256:" + "1" * 64)
        for digest in ("1", "2", "3"):
            assert access.referenced(Route("lab.io", "team/a"), "sha256:" + digest * 64)
            assert not access.referenced(Route("lab.io", "team/b"), "sha256:" + digest * 64)
