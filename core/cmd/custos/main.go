// Command custos is the command-line client of Custos core, for people and scripts: log in
// (with the zero-knowledge key derivation done locally), keep private items, export and import,
// rotate keys, manage users, tenants and API keys. "custos --help" lists the commands;
// docs/cli.md describes them, their environment variables and their exit codes.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/custos-platform/custos/core/internal/cli"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Run(ctx, version, os.Args[1:], os.Getenv, os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
