// Command encryption-service serves Custos key contexts: encrypt, decrypt, rotate and the rest of
// custos.encryption.v1, over gRPC and REST, on mutual TLS 1.3. Run it with no arguments to serve;
// "encryption-service help" lists the other commands. Configuration is read from the environment
// (see the README).
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/custos-platform/custos/encryption-service/internal/app"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := app.Run(ctx, version, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "encryption-service:", err)
		os.Exit(1)
	}
}
