#include "tls.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *slurp(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "cannot read %s", path);
        return NULL;
    }
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    size_t n;
    while (buf && (n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
        len += n;
        if (len + 1 == cap)
            buf = realloc(buf, cap *= 2);
    }
    fclose(f);
    if (!buf) {
        snprintf(err, errlen, "out of memory reading %s", path);
        return NULL;
    }
    buf[len] = '\0';
    if (!strstr(buf, "-----BEGIN ")) {
        snprintf(err, errlen, "%s is not PEM", path);
        free(buf);
        return NULL;
    }
    return buf;
}

int rm_tls_load(rm_tls *t, const char *cert_file, const char *key_file, const char *ca_file,
                int require_client_cert, char *err, size_t errlen)
{
    memset(t, 0, sizeof *t);
    if (!cert_file != !key_file) {
        snprintf(err, errlen, "--tls-cert and --tls-key go together");
        return -1;
    }
    if (require_client_cert && (!ca_file || !cert_file)) {
        snprintf(err, errlen, "--require-client-cert needs --tls-cert, --tls-key and --tls-ca");
        return -1;
    }
    t->require_client_cert = require_client_cert;
    if ((cert_file && !(t->cert = slurp(cert_file, err, errlen))) ||
        (key_file && !(t->key = slurp(key_file, err, errlen))) ||
        (ca_file && !(t->ca = slurp(ca_file, err, errlen)))) {
        rm_tls_free(t);
        return -1;
    }
    return 0;
}

void rm_tls_free(rm_tls *t)
{
    free(t->cert);
    free(t->key);
    free(t->ca);
    memset(t, 0, sizeof *t);
}

int rm_tls_enabled(const rm_tls *t)
{
    return t && t->cert && t->key;
}

grpc_server_credentials *rm_tls_server_creds(const rm_tls *t)
{
    if (!rm_tls_enabled(t))
        return grpc_insecure_server_credentials_create();
    grpc_ssl_pem_key_cert_pair pair = {t->key, t->cert};
    return grpc_ssl_server_credentials_create_ex(
        t->ca, &pair, 1,
        t->require_client_cert ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
                               : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE,
        NULL);
}

grpc_channel_credentials *rm_tls_channel_creds(const rm_tls *t)
{
    if (!t || !t->ca)
        return grpc_insecure_credentials_create();
    grpc_ssl_pem_key_cert_pair pair = {t->key, t->cert};
    return grpc_ssl_credentials_create(t->ca, rm_tls_enabled(t) ? &pair : NULL, NULL, NULL);
}
