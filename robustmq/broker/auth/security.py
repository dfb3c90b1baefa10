"""The broker's security objects built from the ``[auth]`` section, in one place.

``Security.from_config`` reads the password and ACL files (a bad line stops the start),
builds the authenticator chain, the ACL and the abuse limits, and logs one line saying
which authentication mode is active. Each part is None when nothing is configured for
it (the limits, which hold the blacklist, always exist), so a broker without an
``[auth]`` section does no security work per message.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

from robustmq.broker.auth import scram
from robustmq.broker.auth.acl import Acl, load_acl_file
from robustmq.broker.auth.authn import AuthChain, Authenticator, PasswordAuthenticator
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

    @classmethod
    def from_config(cls, config: AuthConfig | None, stats: Counter[str]) -> Security:
        config = config or AuthConfig()
        users: UserStore | None = None
        if config.password_file:
            users = load_password_file(config.password_file)
        available: dict[str, Authenticator] = {}
        if users is not None and len(users):
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
        chain = [available[name] for name in config.authenticators if name in available]
        setting = config.allow_anonymous
        anonymous = setting in (True, "true") or (setting == "auto" and not chain)
        authn = None
        if chain or not anonymous:
            authn = AuthChain(chain, anonymous)
        names = ", ".join(n for n in config.authenticators if n in available) or "none"
        if authn is None:
            log.info("authentication off: every client is accepted (no users, jwt or http)")
        else:
            log.info(
                "authentication on: authenticators %s; anonymous clients %s",
                names,
                "allowed" if anonymous else "refused",
            )
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
        return cls(config, users if users is not None else MemoryUserStore(), authn, acl, limits)
