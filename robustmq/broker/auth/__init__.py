"""Authentication and authorization of broker clients, one module per concern.

``security.py`` builds everything from the ``[auth]`` section; ``passwords.py`` (hashes),
``users.py`` (the user store and password files), ``authn.py`` (the authenticator chain),
``jwt.py``, ``http_auth.py``, ``scram.py`` (SCRAM-SHA-256 on the ``enhanced.py`` hook),
``acl.py`` (rules and the per-connection authorizer), ``limits.py`` (blacklist, flapping,
connection and publish rates) and ``ratelog.py`` (logging that cannot flood). The MQTT
connection calls into these; nothing here touches a socket.
"""
