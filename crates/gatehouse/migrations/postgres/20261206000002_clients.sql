-- OpenID clients: the applications that will sign users in through
-- gatehouse (the flows come later; this is their registry).
-- Never edit this file once released: add a new migration instead.

-- Only the SHA-256 of a confidential client's secret is kept; a public
-- client has none. Lists are text arrays, in the order given
-- (`redirect_uris` are compared exactly, as written). `revision` counts
-- changes, so a change is written only over the version it was judged on.
CREATE TABLE clients (
    client_id                    uuid        PRIMARY KEY,   -- UUID v7
    name                         text        NOT NULL,
    type                         text        NOT NULL CHECK (type IN ('confidential', 'public')),
    secret_hash                  bytea       UNIQUE CHECK (length(secret_hash) = 32),
    redirect_uris                text[]      NOT NULL,
    post_logout_redirect_uris    text[]      NOT NULL,
    first_party                  boolean     NOT NULL,
    grant_types                  text[]      NOT NULL,
    scopes                       text[]      NOT NULL,
    id_token_signed_response_alg text        NOT NULL
        CHECK (id_token_signed_response_alg IN ('RS256', 'ES256', 'EdDSA')),
    created_at                   timestamptz NOT NULL,
    revision                     bigint      NOT NULL DEFAULT 0,
    CHECK ((type = 'confidential') = (secret_hash IS NOT NULL))
);

-- The roles whose permissions a client's client_credentials tokens carry:
-- like a user's, they go when the role goes (a role created again later
-- under the same name grants nothing until assigned again).
CREATE TABLE client_roles (
    client_id uuid             NOT NULL REFERENCES clients (client_id) ON DELETE CASCADE,
    role      text COLLATE "C" NOT NULL REFERENCES roles (name) ON DELETE CASCADE ON UPDATE CASCADE,
    PRIMARY KEY (client_id, role)
);

CREATE INDEX client_roles_by_role ON client_roles (role);
