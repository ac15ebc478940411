/* tls.h -- TLS and mTLS material for gRPC core credentials (OpenSSL under
 * gRPC's SSL credentials). */
#ifndef RM_TLS_H
#define RM_TLS_H

#include <grpc/grpc_security.h>
#include <stddef.h>

typedef struct rm_tls {
    char *cert, *key, *ca; /* PEM text; NULL when not given */
    int require_client_cert;
} rm_tls;

/* Reads the PEM files (any may be NULL) and parses them with OpenSSL:
 * the certificate, the key (unencrypted) and that they match, the CA's
 * certificates. cert and key go together; a required client certificate
 * needs a CA to check it against. Returns 0, or -1 with a reason naming
 * the file in err. */
int rm_tls_load(rm_tls *t, const char *cert_file, const char *key_file, const char *ca_file,
                int require_client_cert, char *err, size_t errlen);
void rm_tls_free(rm_tls *t);

/* Whether t serves TLS (a certificate and key were given). */
int rm_tls_enabled(const rm_tls *t);

/* Server credentials: TLS with t's certificate, or insecure when t is
 * NULL or has no certificate. With a CA, a client certificate is asked
 * for and must chain to it when presented; require_client_cert also
 * refuses clients without one. Caller releases. */
grpc_server_credentials *rm_tls_server_creds(const rm_tls *t);

/* Channel credentials towards a TLS server: verify it with t's CA and
 * present t's certificate (mTLS) when there is one; insecure when t is NULL
 * or has no CA. Caller releases. */
grpc_channel_credentials *rm_tls_channel_creds(const rm_tls *t);

#endif
