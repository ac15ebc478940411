#include "tls.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>

static char *slurp(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
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

static int fail(char *err, size_t errlen, const char *fmt, const char *path)
{
    unsigned long e = ERR_peek_last_error();
    char why[256] = "";
    if (e)
        snprintf(why, sizeof why, " (OpenSSL: %s)", ERR_reason_error_string(e));
    char msg[512];
    snprintf(msg, sizeof msg, fmt, path);
    snprintf(err, errlen, "%s%s", msg, why);
    ERR_clear_error();
    return -1;
}

/* A passphrase callback that has none: gRPC cannot use an encrypted key. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf, (void)size, (void)rwflag, (void)u;
    return -1;
}

/* Parses what gRPC would parse only when the first client connects, so a
 * bad file is named at start: the certificate (chain), the key and that
 * they belong together, every certificate of the CA file. */
static int check_pem(const rm_tls *t, const char *cert_file, const char *key_file,
                     const char *ca_file, char *err, size_t errlen)
{
    int rc = 0;
    X509 *cert = NULL;
    EVP_PKEY *key = NULL;
    ERR_clear_error();
    if (t->cert) {
        BIO *b = BIO_new_mem_buf(t->cert, -1);
        if (!(cert = PEM_read_bio_X509(b, NULL, NULL, NULL)))
            rc = fail(err, errlen, "--tls-cert %s: no PEM certificate could be read", cert_file);
        BIO_free(b);
    }
    if (!rc && t->key) {
        BIO *b = BIO_new_mem_buf(t->key, -1);
        if (!(key = PEM_read_bio_PrivateKey(b, NULL, no_passphrase, NULL)))
            rc = fail(err, errlen,
                      "--tls-key %s: no PEM private key could be read (an encrypted key is not "
                      "supported)",
                      key_file);
        BIO_free(b);
    }
    if (!rc && cert && key && X509_check_private_key(cert, key) != 1) {
        char both[1024];
        snprintf(both, sizeof both, "%s does not belong to the certificate in %s", key_file,
                 cert_file);
        rc = fail(err, errlen, "--tls-key %s", both);
    }
    if (!rc && t->ca) {
        BIO *b = BIO_new_mem_buf(t->ca, -1);
        STACK_OF(X509_INFO) *infos = PEM_X509_INFO_read_bio(b, NULL, NULL, NULL);
        int certs = 0;
        for (int i = 0; infos && i < sk_X509_INFO_num(infos); i++)
            certs += sk_X509_INFO_value(infos, i)->x509 != NULL;
        if (!infos || certs == 0)
            rc = fail(err, errlen, "--tls-ca %s: no PEM certificate could be read", ca_file);
        sk_X509_INFO_pop_free(infos, X509_INFO_free);
        BIO_free(b);
    }
    X509_free(cert);
    EVP_PKEY_free(key);
    return rc;
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
        (ca_file && !(t->ca = slurp(ca_file, err, errlen))) ||
        check_pem(t, cert_file, key_file, ca_file, err, errlen) != 0) {
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
        : t->ca                ? GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY
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
