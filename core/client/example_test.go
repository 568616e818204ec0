package client_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/custos-platform/custos/core/client"
)

// exampleCore starts an in-memory stand-in for core, so that the examples run; with a real core
// the URL is e.g. "https://localhost:8443" and the CA file the one that signed its certificate
// (`make run` writes both to .run/dev.env as CUSTOS_CORE_URL and CUSTOS_CA_FILE).
func exampleCore() (url, caFile string, stop func()) {
	f := startFake()
	dir, err := os.MkdirTemp("", "custos-example")
	if err != nil {
		log.Fatal(err)
	}
	caFile = filepath.Join(dir, "ca.pem")
	if err := f.writeCA(caFile); err != nil {
		log.Fatal(err)
	}
	f.mfa = true
	return f.srv.URL, caFile, func() { f.srv.Close(); os.RemoveAll(dir) }
}

// A person logs in: the client derives what to send from the password (and refuses downgraded
// KDF parameters), answers the TOTP challenge, and in a zero-knowledge tenant keeps the master
// key in memory to send it with every vault call.
func ExampleClient_Login() {
	url, caFile, stop := exampleCore()
	defer stop()
	ctx := context.Background()

	c, err := client.New(url, client.WithCAFile(caFile))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	askCode := func(context.Context) (string, error) { return "123456", nil } // e.g. a prompt
	me, err := c.Login(ctx, "alice", "alice's long passphrase", askCode)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(me.Username, me.Role, me.KeyMode)

	it, err := c.PutItem(ctx, "wifi", "correct horse battery staple")
	if err != nil {
		log.Fatal(err)
	}
	got, err := c.GetItem(ctx, it.ID)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(got.Name, got.Revision)
	// Output:
	// alice owner CLIENT
	// wifi 1
}

// ListItems is an iterator: it fetches further pages as the loop goes on.
func ExampleClient_ListItems() {
	url, caFile, stop := exampleCore()
	defer stop()
	ctx := context.Background()
	c, _ := client.New(url, client.WithCAFile(caFile))
	defer c.Close()
	if _, err := c.Login(ctx, "alice", "alice's long passphrase", func(context.Context) (string, error) { return "123456", nil }); err != nil {
		log.Fatal(err)
	}
	for _, name := range []string{"first", "second"} {
		if _, err := c.PutItem(ctx, name, "…"); err != nil {
			log.Fatal(err)
		}
	}
	for it, err := range c.ListItems(ctx) {
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(it.Name)
	}
	// Output:
	// second
	// first
}

// Export writes encrypted records as NDJSON; Import takes the same file back.
func ExampleClient_Export() {
	url, caFile, stop := exampleCore()
	defer stop()
	ctx := context.Background()
	c, _ := client.New(url, client.WithCAFile(caFile))
	defer c.Close()
	if _, err := c.Login(ctx, "alice", "alice's long passphrase", func(context.Context) (string, error) { return "123456", nil }); err != nil {
		log.Fatal(err)
	}
	if _, err := c.PutItem(ctx, "n", "d"); err != nil {
		log.Fatal(err)
	}
	var backup bytes.Buffer // or an *os.File
	res, err := c.Export(ctx, &backup)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(res.Records, "record(s), resume after", res.LastCursor)
	// Output: 1 record(s), resume after c1
}

// WaitJob follows a re-encryption job (from RotateKeys or StartReencryption) to its end.
func ExampleClient_WaitJob() {
	url, caFile, stop := exampleCore()
	defer stop()
	ctx := context.Background()
	c, _ := client.New(url, client.WithCAFile(caFile))
	defer c.Close()
	if _, err := c.Login(ctx, "alice", "alice's long passphrase", func(context.Context) (string, error) { return "123456", nil }); err != nil {
		log.Fatal(err)
	}
	job, err := c.WaitJob(ctx, "0b7c1f5e-0000-4000-8000-000000000001", 10*time.Millisecond, func(j client.Job) {
		fmt.Printf("%s %d/%d\n", j.State, j.Done, j.Total)
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("final:", job.State)
	// Output:
	// RUNNING 2/4
	// RUNNING 4/4
	// SUCCEEDED 4/4
	// final: SUCCEEDED
}

// A person reviews where they are logged in and ends a session they do not recognise: its tokens
// stop working at once.
func ExampleClient_Sessions() {
	url, caFile, stop := exampleCore()
	defer stop()
	ctx := context.Background()
	c, _ := client.New(url, client.WithCAFile(caFile))
	defer c.Close()
	if _, err := c.Login(ctx, "alice", "alice's long passphrase", func(context.Context) (string, error) { return "123456", nil }); err != nil {
		log.Fatal(err)
	}
	sessions, err := c.Sessions(ctx)
	if err != nil {
		log.Fatal(err)
	}
	for _, s := range sessions {
		fmt.Println(s.RemoteAddr, s.CreatedAt.Format(time.DateOnly), "current:", s.Current)
	}
	if err := c.RevokeSession(ctx, sessions[1].ID); err != nil {
		log.Fatal(err)
	}
	err = c.RevokeSession(ctx, sessions[1].ID)
	fmt.Println("again:", errors.Is(err, client.ErrNotFound))
	// Output:
	// 198.51.100.23 2026-11-20 current: true
	// 203.0.113.7 2026-11-02 current: false
	// again: true
}

// Machines authenticate with an API key and need no login.
func ExampleWithAPIKey() {
	c, err := client.New("https://core.example.org:8443",
		client.WithAPIKey(os.Getenv("CUSTOS_API_KEY"), os.Getenv("CUSTOS_API_SECRET")))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	// c.Export(ctx, file) with scope export; c.RotateKeys(ctx) with scope keys:rotate.
}

// DeriveSecrets is the derivation every client performs (DESIGN.md §4); KDFTestVectors lists
// known answers for clients written in other languages.
func ExampleDeriveSecrets() {
	v := client.KDFTestVectors()[0]
	s, err := client.DeriveSecrets(v.Params, v.Password)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("authPassword:", s.AuthPassword)
	fmt.Println("masterKey:   ", s.MasterKey)
	fmt.Println(s) // never prints the secrets

	_, err = client.DeriveSecrets(client.KDFParams{KDF: "argon2id", Salt: v.Params.Salt, MemoryKiB: 1024, Iterations: 1, Parallelism: 1}, "pw")
	fmt.Println(errors.Is(err, client.ErrKDFDowngrade))
	// Output:
	// authPassword: j6gr8iRDCSEMfedbIXK+PoWrPHSK1leYg/6s/4LDhm4=
	// masterKey:    qzezgmUoO8jB5leGkZLHHlgS7NhOmlp2nZXahl7/jfM=
	// client.Secrets{[redacted]}
	// true
}

// Errors answered by core are *client.Error values; errors.Is matches them by code.
func ExampleError() {
	url, caFile, stop := exampleCore()
	defer stop()
	ctx := context.Background()
	c, _ := client.New(url, client.WithCAFile(caFile))
	defer c.Close()
	if _, err := c.Login(ctx, "alice", "alice's long passphrase", func(context.Context) (string, error) { return "123456", nil }); err != nil {
		log.Fatal(err)
	}
	_, err := c.GetItem(ctx, "00000000-0000-0000-0000-00000000dead")
	var e *client.Error
	if errors.As(err, &e) {
		fmt.Println(e.HTTPStatus, e.Code, errors.Is(err, client.ErrNotFound))
	}
	// Output: 404 NOT_FOUND true
}
