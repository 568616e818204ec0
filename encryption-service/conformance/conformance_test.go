package conformance_test

import (
	"flag"
	"os"
	"testing"

	"github.com/custos-platform/custos/encryption-service/conformance"
)

// Flags for the settings that are not secrets; secrets come from the environment or from files
// (…_FILE), never from flags that would show in ps. A flag wins over its environment variable.
var (
	flagURL          = flag.String("conformance.url", "", "REST base URL of the encryption service to check, https://host:port ("+conformance.EnvURL+")")
	flagServerName   = flag.String("conformance.server-name", "", "name in the server certificate, when not the URL's host ("+conformance.EnvServerName+")")
	flagCAFile       = flag.String("conformance.ca-file", "", "PEM CA bundle of the server certificate ("+conformance.EnvCAFile+")")
	flagCertFile     = flag.String("conformance.client-cert-file", "", "PEM client certificate ("+conformance.EnvClientCertFile+")")
	flagKeyFile      = flag.String("conformance.client-key-file", "", "PEM key of the client certificate ("+conformance.EnvClientKeyFile+")")
	flagTenantID     = flag.String("conformance.tenant-id", "", "tenant id, X-Tenant-Id ("+conformance.EnvTenantID+")")
	flagSecretFile   = flag.String("conformance.tenant-secret-file", "", "file holding the tenant secret ("+conformance.EnvTenantSecret+"_FILE)")
	flagMasterFile   = flag.String("conformance.master-key-file", "", "file holding a client master key, base64 of 32 bytes, for the CLIENT-mode checks ("+conformance.EnvMasterKey+"_FILE)")
	flagAdminFile    = flag.String("conformance.admin-token-file", "", "file holding the admin token, for the tenant checks ("+conformance.EnvAdminToken+"_FILE)")
	flagEncryptionID = flag.String("conformance.encryption-id", "", "an existing PLATFORM key context, for services without POST /v1/encryptions ("+conformance.EnvEncryptionID+")")
	flagRequire      = flag.String("conformance.require", "", "comma-separated optional sections that must run ("+conformance.EnvRequire+")")
	flagTimeout      = flag.String("conformance.request-timeout", "", "bound on each request, e.g. 30s ("+conformance.EnvTimeout+")")
)

// TestConformance runs the conformance suite against the service that the flags and the
// environment name, and skips when none is named. This service itself is checked by
// TestConformanceAgainstThisService in every `make test`.
func TestConformance(t *testing.T) {
	flags := map[string]string{
		conformance.EnvURL:                    *flagURL,
		conformance.EnvServerName:             *flagServerName,
		conformance.EnvCAFile:                 *flagCAFile,
		conformance.EnvClientCertFile:         *flagCertFile,
		conformance.EnvClientKeyFile:          *flagKeyFile,
		conformance.EnvTenantID:               *flagTenantID,
		conformance.EnvTenantSecret + "_FILE": *flagSecretFile,
		conformance.EnvMasterKey + "_FILE":    *flagMasterFile,
		conformance.EnvAdminToken + "_FILE":   *flagAdminFile,
		conformance.EnvEncryptionID:           *flagEncryptionID,
		conformance.EnvRequire:                *flagRequire,
		conformance.EnvTimeout:                *flagTimeout,
	}
	getenv := func(name string) string {
		if v := flags[name]; v != "" {
			return v
		}
		return os.Getenv(name)
	}
	target, configured, err := conformance.LoadTarget(getenv)
	if err != nil {
		t.Fatalf("conformance settings: %v", err)
	}
	if !configured {
		t.Skip("no encryption service to check: set " + conformance.EnvURL + " (or -conformance.url) and the other " +
			"CONFORMANCE_* settings listed in docs/conformance.md. This service is checked by TestConformanceAgainstThisService.")
	}
	conformance.Run(t, target)
}
