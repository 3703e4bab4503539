-- OpenID clients: the applications that will sign users in through
-- gatehouse (the flows come later; this is their registry).
-- Never edit this file once released: add a new migration instead.

-- Only the SHA-256 of a confidential client's secret is kept; a public
-- client has none. Lists are JSON arrays of strings, in the order given
-- (`redirect_uris` are compared exactly, as written). `revision` counts
-- changes, so a change is written only over the version it was judged on.
CREATE TABLE clients (
    client_id                    TEXT    PRIMARY KEY NOT NULL,   -- UUID v7
    name                         TEXT    NOT NULL,
    type                         TEXT    NOT NULL CHECK (type IN ('confidential', 'public')),
    secret_hash                  BLOB    UNIQUE CHECK (length(secret_hash) = 32),
    redirect_uris                TEXT    NOT NULL
        CHECK (json_valid(redirect_uris) AND json_type(redirect_uris) = 'array'),
    post_logout_redirect_uris    TEXT    NOT NULL
        CHECK (json_valid(post_logout_redirect_uris)
               AND json_type(post_logout_redirect_uris) = 'array'),
    first_party                  INTEGER NOT NULL CHECK (first_party IN (0, 1)),
    grant_types                  TEXT    NOT NULL
        CHECK (json_valid(grant_types) AND json_type(grant_types) = 'array'),
    scopes                       TEXT    NOT NULL
        CHECK (json_valid(scopes) AND json_type(scopes) = 'array'),
    id_token_signed_response_alg TEXT    NOT NULL
        CHECK (id_token_signed_response_alg IN ('RS256', 'ES256', 'EdDSA')),
    created_at                   INTEGER NOT NULL,
    revision                     INTEGER NOT NULL DEFAULT 0,
    CHECK ((type = 'confidential') = (secret_hash IS NOT NULL))
) STRICT;

-- The roles whose permissions a client's client_credentials tokens carry:
-- like a user's, they go when the role goes (a role created again later
-- under the same name grants nothing until assigned again).
CREATE TABLE client_roles (
    client_id TEXT NOT NULL REFERENCES clients (client_id) ON DELETE CASCADE,
    role      TEXT NOT NULL REFERENCES roles (name) ON DELETE CASCADE ON UPDATE CASCADE,
    PRIMARY KEY (client_id, role)
) STRICT, WITHOUT ROWID;

CREATE INDEX client_roles_by_role ON client_roles (role);
