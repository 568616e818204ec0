package bench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"

	"github.com/custos-platform/custos/encryption-service/internal/app"
	"github.com/custos-platform/custos/encryption-service/internal/mtls"
	encryptionv1 "github.com/custos-platform/custos/proto/gen/custos/encryption/v1"
)

// serverName is the DNS name of the harness's server certificate.
const serverName = "localhost"

// poolSize is how many distinct ciphertexts the decrypt and rewrap cases cycle through.
const poolSize = 64

// Machine describes where a run happened.
type Machine struct {
	CPUs       int    // logical CPUs (nproc)
	CPUModel   string // from /proc/cpuinfo, "unknown" elsewhere
	GoVersion  string
	OS         string
	PostgreSQL string // SELECT version()
	Date       time.Time
	// LoadAverage is the 1-, 5- and 15-minute load average when the run started (/proc/loadavg):
	// above the number of CPUs, other work competed with the run.
	LoadAverage string
}

// env is everything a run needs: the service, the echo servers, clients and ready-made data.
type env struct {
	cfg     Config
	machine Machine
	dir     string

	stopService context.CancelFunc
	serviceDone chan error
	grpcAddr    string
	httpAddr    string

	echoGRPC                   *grpc.Server
	echoHTTP                   *http.Server
	echoGRPCAddr, echoHTTPAddr string

	esConn, echoConn *grpc.ClientConn
	es               encryptionv1.EncryptionServiceClient
	restClient       *http.Client // to the service
	echoRESTClient   *http.Client // to the REST echo, configured alike

	tenantMD     metadata.MD
	tenantHeader http.Header
	encryptionID string
	payload      string
	current      []*encryptionv1.EncryptResponse // under the active version: decrypt inputs
	previous     []*encryptionv1.EncryptResponse // under the version before: rewrap inputs
}

// setUp starts the service and the echo servers and prepares a tenant, a key context and
// ciphertexts. On failure it undoes what it did.
func setUp(ctx context.Context, cfg Config) (e *env, err error) {
	e = &env{cfg: cfg}
	defer func() {
		if err != nil {
			e.close()
			e = nil
		}
	}()
	if e.dir, err = os.MkdirTemp("", "es-bench-"); err != nil {
		return nil, err
	}
	files, err := writePKI(e.dir)
	if err != nil {
		return nil, fmt.Errorf("bench: certificates: %w", err)
	}
	if e.machine, err = describeMachine(ctx, cfg.DatabaseURL); err != nil {
		return nil, err
	}
	adminToken := "cat_" + rand.Text()
	if err := e.startService(ctx, files, adminToken); err != nil {
		return nil, err
	}
	serverTLS, err := mtls.NewServerConfig(mtls.ServerOptions{
		CertFile: files.serverCert, KeyFile: files.serverKey, ClientCAFile: files.ca, ClientAuth: mtls.RequireClientCert,
	})
	if err != nil {
		return nil, fmt.Errorf("bench: echo TLS: %w", err)
	}
	if err := e.startEchoServers(serverTLS); err != nil {
		return nil, err
	}
	clientTLS, err := mtls.NewClientConfig(mtls.ClientOptions{
		CAFile: files.ca, CertFile: files.clientCert, KeyFile: files.clientKey, ServerName: serverName,
	})
	if err != nil {
		return nil, fmt.Errorf("bench: client TLS: %w", err)
	}
	if err := e.dialClients(clientTLS); err != nil {
		return nil, err
	}
	if err := e.prepareData(ctx, adminToken); err != nil {
		return nil, err
	}
	return e, nil
}

// close stops everything setUp started, in reverse order, and removes the certificates.
func (e *env) close() {
	for _, c := range []*grpc.ClientConn{e.esConn, e.echoConn} {
		if c != nil {
			c.Close()
		}
	}
	for _, c := range []*http.Client{e.restClient, e.echoRESTClient} {
		if c != nil {
			c.CloseIdleConnections()
		}
	}
	if e.echoGRPC != nil {
		e.echoGRPC.Stop()
	}
	if e.echoHTTP != nil {
		e.echoHTTP.Close()
	}
	if e.stopService != nil {
		e.stopService()
		select {
		case err := <-e.serviceDone:
			if err != nil {
				fmt.Fprintf(e.cfg.Progress, "es-bench: the service stopped with an error: %v\n", err)
			}
		case <-time.After(30 * time.Second):
			fmt.Fprintln(e.cfg.Progress, "es-bench: the service did not stop within 30s")
		}
	}
	if e.dir != "" {
		os.RemoveAll(e.dir)
	}
}

// pkiFiles are the PEM files writePKI makes.
type pkiFiles struct {
	ca, serverCert, serverKey, clientCert, clientKey string
}

// writePKI makes a throwaway ECDSA P-256 CA, a server certificate for localhost and 127.0.0.1, and
// a client certificate, as PEM files in dir.
func writePKI(dir string) (pkiFiles, error) {
	f := pkiFiles{
		ca:         filepath.Join(dir, "ca.pem"),
		serverCert: filepath.Join(dir, "server.pem"), serverKey: filepath.Join(dir, "server-key.pem"),
		clientCert: filepath.Join(dir, "client.pem"), clientKey: filepath.Join(dir, "client-key.pem"),
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return f, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "es-bench CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return f, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return f, err
	}
	if err := writePEM(f.ca, "CERTIFICATE", caDER); err != nil {
		return f, err
	}
	leaves := []struct {
		tmpl              *x509.Certificate
		certFile, keyFile string
	}{
		{&x509.Certificate{
			SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: serverName},
			DNSNames: []string{serverName}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		}, f.serverCert, f.serverKey},
		{&x509.Certificate{
			SerialNumber: big.NewInt(3), Subject: pkix.Name{CommonName: "es-bench client"},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}, f.clientCert, f.clientKey},
	}
	for _, l := range leaves {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return f, err
		}
		l.tmpl.NotBefore, l.tmpl.NotAfter, l.tmpl.KeyUsage = now.Add(-time.Hour), now.Add(24*time.Hour), x509.KeyUsageDigitalSignature
		der, err := x509.CreateCertificate(rand.Reader, l.tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			return f, err
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return f, err
		}
		if err := writePEM(l.certFile, "CERTIFICATE", der); err != nil {
			return f, err
		}
		if err := writePEM(l.keyFile, "PRIVATE KEY", keyDER); err != nil {
			return f, err
		}
	}
	return f, nil
}

func writePEM(path, typ string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
}

// describeMachine reads the CPU model and PostgreSQL's version.
func describeMachine(ctx context.Context, databaseURL string) (Machine, error) {
	m := Machine{CPUs: runtime.NumCPU(), CPUModel: "unknown", GoVersion: runtime.Version(),
		OS: runtime.GOOS + "/" + runtime.GOARCH, Date: time.Now().UTC()}
	m.LoadAverage = "unknown"
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) >= 3 {
			m.LoadAverage = strings.Join(f[:3], " ")
		}
	}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, databaseURL)
	if err != nil {
		return m, fmt.Errorf("bench: connect to the database: %w", err)
	}
	defer conn.Close(ctx)
	if err := conn.QueryRow(ctx, "SELECT version()").Scan(&m.PostgreSQL); err != nil {
		return m, fmt.Errorf("bench: read PostgreSQL's version: %w", err)
	}
	if short, _, ok := strings.Cut(m.PostgreSQL, " on "); ok {
		m.PostgreSQL = short
	}
	return m, nil
}

// startService runs the service through app.Run with production defaults (log level info, pool
// size 20), on loopback ports, and waits until it listens.
func (e *env) startService(ctx context.Context, files pkiFiles, adminToken string) error {
	masterKey := make([]byte, 32)
	rand.Read(masterKey)
	hash := sha256.Sum256([]byte(adminToken))
	vars := map[string]string{
		"ES_DATABASE_URL":       e.cfg.DatabaseURL,
		"ES_GRPC_ADDR":          "127.0.0.1:0",
		"ES_HTTP_ADDR":          "127.0.0.1:0",
		"ES_TLS_CERT_FILE":      files.serverCert,
		"ES_TLS_KEY_FILE":       files.serverKey,
		"ES_TLS_CLIENT_CA_FILE": files.ca,
		"ES_MASTER_KEYS":        "bench:" + base64.StdEncoding.EncodeToString(masterKey),
		"ES_ADMIN_TOKEN_HASH":   hex.EncodeToString(hash[:]),
		"ES_LOG_LEVEL":          "info",
	}
	logs := &listenWatcher{addrs: make(chan [2]string, 1)}
	sctx, cancel := context.WithCancel(context.Background())
	e.stopService, e.serviceDone = cancel, make(chan error, 1)
	go func() {
		e.serviceDone <- app.Run(sctx, "bench", nil, func(k string) string { return vars[k] }, io.Discard, logs)
	}()
	select {
	case a := <-logs.addrs:
		e.grpcAddr, e.httpAddr = a[0], a[1]
		return nil
	case err := <-e.serviceDone:
		e.stopService = nil
		return fmt.Errorf("bench: the service exited before listening: %w", err)
	case <-time.After(2 * time.Minute):
		return errors.New("bench: the service did not listen within 2 minutes")
	case <-ctx.Done():
		return ctx.Err()
	}
}

// listenWatcher is the service's log: it finds the "server: listening" line, then drops every
// line (the access log still costs the service its JSON encoding, as in production).
type listenWatcher struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	found bool
	addrs chan [2]string // gRPC and REST address
}

func (w *listenWatcher) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.found {
		return len(p), nil
	}
	w.buf.Write(p)
	for {
		line, err := w.buf.ReadBytes('\n')
		if err != nil {
			w.buf.Write(line)
			return len(p), nil
		}
		var l struct {
			Msg      string `json:"msg"`
			GRPCAddr string `json:"grpc_addr"`
			HTTPAddr string `json:"http_addr"`
		}
		if json.Unmarshal(line, &l) == nil && l.Msg == "server: listening" {
			w.found = true
			w.buf.Reset()
			w.addrs <- [2]string{l.GRPCAddr, l.HTTPAddr}
			return len(p), nil
		}
	}
}

// startEchoServers serves the gRPC and REST echo ceilings on loopback with serverTLS, the
// service's own TLS configuration.
func (e *env) startEchoServers(serverTLS *tls.Config) error {
	gl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("bench: echo gRPC listener: %w", err)
	}
	// The service's server also takes messages up to ES_MAX_REQUEST_BYTES (4 MiB by default).
	e.echoGRPC = grpc.NewServer(grpc.Creds(credentials.NewTLS(serverTLS)), grpc.MaxRecvMsgSize(4<<20))
	e.echoGRPC.RegisterService(echoServiceDesc(), struct{}{})
	e.echoGRPCAddr = gl.Addr().String()
	go func() { _ = e.echoGRPC.Serve(gl) }() // returns when close stops it

	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("bench: echo REST listener: %w", err)
	}
	e.echoHTTP = &http.Server{
		Handler:           http.HandlerFunc(echoHTTP),
		ReadHeaderTimeout: 10 * time.Second,
	}
	e.echoHTTPAddr = hl.Addr().String()
	go func() { _ = e.echoHTTP.Serve(tls.NewListener(hl, serverTLS)) }() // returns when close stops it
	return nil
}

// echoHTTP answers with the JSON body it was sent.
func echoHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 4<<20))
	if err != nil {
		http.Error(w, "read body", http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(body) // a failed write is the client's error to see
}

// dialClients makes one gRPC connection to the service and one to the echo server, and HTTP/1.1
// clients with a connection pool large enough for every caller, alike for both.
func (e *env) dialClients(clientTLS *tls.Config) error {
	var err error
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(credentials.NewTLS(clientTLS)),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(16 << 20)),
	}
	if e.esConn, err = grpc.NewClient(e.grpcAddr, opts...); err != nil {
		return fmt.Errorf("bench: dial the service: %w", err)
	}
	if e.echoConn, err = grpc.NewClient(e.echoGRPCAddr, opts...); err != nil {
		return fmt.Errorf("bench: dial the echo server: %w", err)
	}
	e.es = encryptionv1.NewEncryptionServiceClient(e.esConn)
	maxConns := 0
	for _, n := range e.cfg.Concurrency {
		maxConns = max(maxConns, n)
	}
	newClient := func() *http.Client {
		return &http.Client{Transport: &http.Transport{
			TLSClientConfig:     clientTLS.Clone(),
			MaxIdleConns:        maxConns * 2,
			MaxIdleConnsPerHost: maxConns * 2,
			IdleConnTimeout:     time.Minute,
			DisableCompression:  true,
		}}
	}
	e.restClient, e.echoRESTClient = newClient(), newClient()
	return nil
}

// prepareData creates a tenant through the admin plane, an AES-256-GCM PLATFORM key context, and
// ciphertexts under two versions: the older ones to rewrap, the current ones to decrypt.
func (e *env) prepareData(ctx context.Context, adminToken string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	admin := encryptionv1.NewAdminServiceClient(e.esConn)
	tenant, err := admin.CreateTenant(metadata.AppendToOutgoingContext(ctx, "x-admin-token", adminToken),
		&encryptionv1.CreateTenantRequest{Name: "bench"})
	if err != nil {
		return fmt.Errorf("bench: create the tenant: %w", err)
	}
	e.tenantMD = metadata.Pairs("x-tenant-id", tenant.TenantId, "x-tenant-secret", tenant.Secret)
	e.tenantHeader = http.Header{
		"Content-Type":    {"application/json"},
		"X-Tenant-Id":     {tenant.TenantId},
		"X-Tenant-Secret": {tenant.Secret},
	}
	tctx := metadata.NewOutgoingContext(ctx, e.tenantMD)
	created, err := e.es.CreateEncryption(tctx, &encryptionv1.CreateEncryptionRequest{Algorithm: "AES-256-GCM", KeyMode: "PLATFORM"})
	if err != nil {
		return fmt.Errorf("bench: create the key context: %w", err)
	}
	e.encryptionID = created.EncryptionId
	// Data travels as a string; random base64 is what callers with binary data send.
	raw := make([]byte, e.cfg.PayloadBytes)
	rand.Read(raw)
	e.payload = base64.StdEncoding.EncodeToString(raw)[:e.cfg.PayloadBytes]

	fill := func(dst *[]*encryptionv1.EncryptResponse) error {
		for range poolSize {
			r, err := e.es.Encrypt(tctx, &encryptionv1.EncryptRequest{EncryptionId: e.encryptionID, Data: e.payload})
			if err != nil {
				return fmt.Errorf("bench: encrypt the data to decrypt: %w", err)
			}
			*dst = append(*dst, r)
		}
		return nil
	}
	if err := fill(&e.previous); err != nil {
		return err
	}
	if _, err := e.es.Rotate(tctx, &encryptionv1.RotateRequest{EncryptionId: e.encryptionID}); err != nil {
		return fmt.Errorf("bench: rotate the key context: %w", err)
	}
	return fill(&e.current)
}
