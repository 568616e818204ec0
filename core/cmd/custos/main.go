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

// main runs the command with a context that the first Ctrl-C (or SIGTERM) ends: custos gives up
// at once with exit 130, reads of standard input included, saving a refresh under way first. The
// signals are then untrapped, so that a second Ctrl-C kills the process should anything still
// hold it up.
func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	context.AfterFunc(ctx, stop)
	code := cli.Run(ctx, version, os.Args[1:], os.Getenv, os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
