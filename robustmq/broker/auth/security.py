"""The broker's security objects built from the ``[auth]`` section, in one place.

``Security.from_config`` reads the password and ACL files (a bad line stops the start),
builds the authenticator chain, the ACL and the abuse limits, and logs one line saying
which authentication mode is active. Each part is None when nothing is configured for
it (the limits, which hold the blacklist, always exist), so a broker without an
``[auth]`` section does no security work per message. When the users come from the Meta
Service (no password file; ``robustmq/broker/mqtt/meta_rules.py``), they change at run
time and ``refresh_authn`` picks the chain again each time: the password authenticator
takes part while there are users, as it would with a password file holding them.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

from robustmq.broker.auth import scram
from robustmq.broker.auth.acl import Acl, load_acl_file
from robustmq.broker.auth.authn import (
    UNAVAILABLE,
    AuthChain,
    Authenticator,
    ConnectInfo,
    Outcome,
    PasswordAuthenticator,
)
from robustmq.broker.auth.enhanced import AuthMethods
from robustmq.broker.auth.http_auth import HttpAuthenticator
from robustmq.broker.auth.jwt import JwtAuthenticator
from robustmq.broker.auth.limits import Limits, LimitSettings, blacklist_from_config
from robustmq.broker.auth.scram import ScramCredentials
from robustmq.broker.auth.users import MemoryUserStore, UserStore, load_password_file
from robustmq.config import AuthConfig

log = logging.getLogger("robustmq.broker.auth")


@dataclass
class Security:
    config: AuthConfig
    users: UserStore  # the built-in users (SCRAM uses them too)
    authn: AuthChain | None  # None: every client is accepted
    acl: Acl | None  # None: no rule, nothing denied
    limits: Limits  # the blacklist is always there: bans can be added at run time
    # Every configured authenticator by name, the password one whenever there is a user
    # store: what refresh_authn chooses from.
    authenticators: dict[str, Authenticator] = field(default_factory=dict)

    def enhanced_auth_methods(self) -> AuthMethods:
        """SCRAM-SHA-256 against the built-in users, when there are any. A banned username
        has no credentials: the blacklist saw only the CONNECT's username, and a SCRAM
        client names its user inside the exchange."""
        users, blacklist = self.users, self.limits.blacklist
        if not len(users):
            return {}

        def credentials(username: str) -> ScramCredentials | None:
            user = users.get(username)
            if user is None or blacklist.username_banned(username):
                return None
            return user.scram

        return {scram.METHOD: lambda: scram.ScramExchange(credentials)}

    def refresh_authn(self) -> None:
        """Picks the authenticator chain again after the users changed at run time."""
        before = self.authn and (self.authn.authenticators, self.authn.allow_anonymous)
        self.authn = _chain(self.config, self.authenticators, self.users, self.authn)
        if before != (self.authn and (self.authn.authenticators, self.authn.allow_anonymous)):
            _log_mode(self.config, self.authenticators, self.authn)

    @classmethod
    def from_config(
        cls, config: AuthConfig | None, stats: Counter[str], users: UserStore | None = None
    ) -> Security:
        """``users``: the built-in users when no password file holds them (the Meta
        Service's, filled and followed at run time)."""
        config = config or AuthConfig()
        if config.password_file:
            users = load_password_file(config.password_file)
        available: dict[str, Authenticator] = {}
        if users is not None:
            available["password"] = PasswordAuthenticator(users)
        if config.jwt_secret or config.jwt_public_key_file:
            available["jwt"] = JwtAuthenticator(
                secret=config.jwt_secret,
                public_key_file=config.jwt_public_key_file,
                source=config.jwt_from,
            )
        if config.http_url:
            available["http"] = HttpAuthenticator(
                config.http_url, config.http_timeout, config.http_cache_ttl
            )
        authn = _chain(config, available, users, None)
        _log_mode(config, available, authn)
        acl = None
        if config.acl_file or config.acl_default == "deny":
            rules = load_acl_file(config.acl_file) if config.acl_file else []
            acl = Acl(rules, config.acl_default == "allow", stats)
        settings = LimitSettings(
            flapping_max_connects=config.flapping_max_connects,
            flapping_window=config.flapping_window,
            flapping_ban_time=config.flapping_ban_time,
            max_connections_per_ip=config.max_connections_per_ip,
            connect_rate=config.connect_rate,
            connect_burst=config.connect_burst,
            publish_rate=config.publish_rate,
            publish_byte_rate=config.publish_byte_rate,
        )
        limits = Limits(settings, blacklist_from_config(config.blacklist), stats)
        return cls(
            config, users if users is not None else MemoryUserStore(), authn, acl, limits, available
        )


def _log_mode(
    config: AuthConfig, available: dict[str, Authenticator], authn: AuthChain | None
) -> None:
    chosen = authn.authenticators if authn is not None else []
    if _NOT_LOADED in chosen:
        log.info("authentication waits for the users of the Meta Service to load")
    elif authn is None:
        log.info("authentication off: every client is accepted (no users, jwt or http)")
    else:
        names = ", ".join(n for n in config.authenticators if available.get(n) in chosen)
        log.info(
            "authentication on: authenticators %s; anonymous clients %s",
            names or "none",
            "allowed" if authn.allow_anonymous else "refused",
        )


class _UsersNotLoaded:
    """Stands for the password authenticator while the users are not known yet."""

    def authenticate(self, info: ConnectInfo) -> Outcome:
        return UNAVAILABLE

    async def close(self) -> None:
        return None


_NOT_LOADED = _UsersNotLoaded()


def _chain(
    config: AuthConfig,
    available: dict[str, Authenticator],
    users: UserStore | None,
    current: AuthChain | None,
) -> AuthChain | None:
    """The chain of ``config.authenticators`` that are configured (the password one only
    while there are users), or None when it would accept everyone. ``current`` is kept
    when nothing changes, so that its pending authentications stay its own."""
    chain = []
    for name in config.authenticators:
        authenticator = available.get(name)
        if authenticator is None:
            continue
        if name == "password" and users is not None and not users.loaded:
            authenticator = _NOT_LOADED
        elif name == "password" and (users is None or len(users) == 0):
            continue
        chain.append(authenticator)
    setting = config.allow_anonymous
    anonymous = setting in (True, "true") or (setting == "auto" and not chain)
    if not chain and anonymous:
        return None
    if current is not None and current.authenticators == chain:
        return current
    return AuthChain(chain, anonymous)
