package postgres_test

import (
	"encoding/hex"
	"testing"

	"github.com/custos-platform/custos/core/internal/postgres"
)

// TestPlatformSecretADKnownAnswers pins the associated data of the sealed platform secrets
// (computed independently): a change of label, separator or name would make every stored prelogin
// seed and export key unopenable, and so every earlier export unimportable.
func TestPlatformSecretADKnownAnswers(t *testing.T) {
	t.Parallel()
	for name, want := range map[string]string{
		postgres.PlatformPreloginSeed: "637573746f732f636f72652f706c6174666f726d2d7365637265742f7631007072656c6f67696e2d73656564",
		postgres.PlatformExportKey:    "637573746f732f636f72652f706c6174666f726d2d7365637265742f7631006578706f72742d696e746567726974792d6b6579",
	} {
		if got := hex.EncodeToString(postgres.PlatformSecretAD(name)); got != want {
			t.Errorf("PlatformSecretAD(%q) = %s, want %s", name, got, want)
		}
	}
}
