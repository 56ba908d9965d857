"""A standard OAuth client, independent of credgate's code (issue 16, "Done when").

Given only the RFC 8414 metadata URL, the CA that signs the server's certificate and a client's
credentials, it obtains a token with Authlib (client credentials, each token endpoint auth
method the metadata lists that Authlib speaks) and verifies every token with PyJWT against the
JWKS the metadata names, its `iss` against the metadata's `issuer`. A tampered token must fail. Prints one JSON line; exits non-zero on any
failure. Run by tests/api/standard_client.rs.
"""

import argparse
import json
import ssl
import sys

import jwt
import requests
from authlib.integrations.requests_client import OAuth2Session

SPOKEN = ("client_secret_basic", "client_secret_post")


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--metadata", required=True, help="the RFC 8414 metadata URL")
    p.add_argument("--ca", required=True, help="PEM CA the server's certificate chains to")
    p.add_argument("--client-id", required=True)
    p.add_argument("--client-secret", required=True)
    p.add_argument("--audience", required=True, help="the API's audience (aud)")
    a = p.parse_args()

    # trust_env off: REQUESTS_CA_BUNDLE (or a proxy) from the environment would override the CA.
    http = requests.Session()
    http.trust_env = False
    http.verify = a.ca
    meta = http.get(a.metadata, timeout=10).json()
    for field in ("token_endpoint", "jwks_uri"):
        if not meta[field].startswith("https://"):
            raise SystemExit(f"{field} is not https: {meta[field]}")
    methods = [m for m in meta["token_endpoint_auth_methods_supported"] if m in SPOKEN]
    if not methods:
        raise SystemExit(f"no auth method Authlib speaks: {meta}")
    jwks = jwt.PyJWKClient(meta["jwks_uri"], ssl_context=ssl.create_default_context(cafile=a.ca))

    seen = []
    for method in methods:
        client = OAuth2Session(
            a.client_id, a.client_secret, token_endpoint_auth_method=method
        )
        client.trust_env = False
        client.verify = a.ca
        token = client.fetch_token(meta["token_endpoint"], grant_type="client_credentials")
        access = token["access_token"]
        if token.get("token_type", "").lower() != "bearer":
            raise SystemExit(f"token_type: {token}")
        key = jwks.get_signing_key_from_jwt(access)
        claims = jwt.decode(
            access,
            key.key,
            algorithms=["EdDSA", "ES256", "RS256"],
            audience=a.audience,
            issuer=meta["issuer"],
            options={"require": ["exp", "iat", "sub", "iss"]},
        )
        # RFC 9068 section 4 / RFC 8414 section 3.3: the token's issuer is the metadata's,
        # byte for byte (PyJWT checked it above; say so plainly too).
        if claims["iss"] != meta["issuer"]:
            raise SystemExit(f"iss {claims['iss']!r} is not the metadata's issuer {meta['issuer']!r}")
        if claims["sub"] != a.client_id:
            raise SystemExit(f"sub {claims['sub']} is not {a.client_id}")
        # One changed character of the signature must fail verification.
        head, body, sig = access.split(".")
        forged = ".".join([head, body, ("A" if sig[0] != "A" else "B") + sig[1:]])
        try:
            jwt.decode(forged, key.key, algorithms=["EdDSA", "ES256", "RS256"], audience=a.audience)
            raise SystemExit("a forged signature verified")
        except jwt.InvalidSignatureError:
            pass
        seen.append(
            {"method": method, "alg": key.algorithm_name, "sub": claims["sub"], "iss": claims["iss"]}
        )

    print(json.dumps({"ok": True, "issuer": meta["issuer"], "tokens": seen}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
