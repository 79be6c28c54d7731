package pgcoord

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/url"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/internal/pgtemp"
)

// writePEM writes one PEM block to path.
func writePEM(t *testing.T, path, kind string, der []byte, mode os.FileMode) {
	t.Helper()
	require.NoError(t, os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), mode))
}

// makeTLSFiles generates a CA and a server certificate for 127.0.0.1 and
// localhost, readable by the server's OS user, and returns the directory.
func makeTLSFiles(t *testing.T, dir string) (caPath, certPath, keyPath string) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	ca := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "pgcoord test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	require.NoError(t, err)
	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	srv := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:     []string{"localhost"},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srv, ca, &srvKey.PublicKey, caKey)
	require.NoError(t, err)
	keyDER, err := x509.MarshalECPrivateKey(srvKey)
	require.NoError(t, err)

	caPath, certPath, keyPath = filepath.Join(dir, "ca.pem"), filepath.Join(dir, "server.pem"), filepath.Join(dir, "server.key")
	writePEM(t, caPath, "CERTIFICATE", caDER, 0o644)
	writePEM(t, certPath, "CERTIFICATE", srvDER, 0o644)
	writePEM(t, keyPath, "EC PRIVATE KEY", keyDER, 0o600)
	if os.Geteuid() == 0 {
		// The server runs as postgres and insists on owning its key.
		u, err := user.Lookup("postgres")
		require.NoError(t, err)
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		for _, p := range []string{dir, certPath, keyPath} {
			require.NoError(t, os.Chown(p, uid, gid))
		}
	}
	return caPath, certPath, keyPath
}

// A coordinator connects with sslmode=verify-full to a server whose
// certificate a generated CA signed; every session is encrypted, and a
// client trusting another CA is refused.
func TestTLSVerifyFull(t *testing.T) {
	t.Parallel()
	dir, err := os.MkdirTemp("", "pgcoord-tls-*")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	require.NoError(t, os.Chmod(dir, 0o755))
	caPath, certPath, keyPath := makeTLSFiles(t, dir)
	srv, err := pgtemp.Start(pgtemp.Options{Settings: map[string]string{
		"ssl": "on", "ssl_cert_file": certPath, "ssl_key_file": keyPath,
	}})
	require.NoError(t, err)
	defer srv.Close()

	u, err := url.Parse(srv.URL())
	require.NoError(t, err)
	q := u.Query()
	q.Set("sslmode", "verify-full")
	q.Set("sslrootcert", caPath)
	u.RawQuery = q.Encode()
	tlsURL := u.String()
	require.NoError(t, Migrate(ctx(t), tlsURL))

	c := newCoord(t, testPrefix(t), func(cfg *Config) { cfg.ConnString = tlsURL })
	l := c.GetLock("encrypted")
	mustAcquire(t, l, NoWait)
	conn := connect(t, tlsURL)
	var sessions int
	var allSSL bool
	require.NoError(t, conn.QueryRow(ctx(t), `
		SELECT count(*), coalesce(bool_and(s.ssl), false)
		FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
		WHERE a.application_name = $1`, c.sessionTag).Scan(&sessions, &allSSL))
	require.GreaterOrEqual(t, sessions, 2, "control and the lock's session")
	require.True(t, allSSL, "every session of the coordinator uses TLS")
	require.NoError(t, l.Release(ctx(t)))

	// A client that trusts another CA refuses the server.
	otherDir := t.TempDir()
	otherCA, _, _ := makeTLSFiles(t, otherDir)
	q.Set("sslrootcert", otherCA)
	u.RawQuery = q.Encode()
	bad, err := New(Config{ConnString: u.String(), Logger: quietLogger()})
	require.NoError(t, err)
	err = bad.Start(ctx(t))
	require.Error(t, err)
	require.Contains(t, err.Error(), "certificate")
}
