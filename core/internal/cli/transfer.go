package cli

import (
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"
	"github.com/spf13/cobra"

	"github.com/custos-platform/custos/core/client"
)

func (e *env) exportCommand() *cobra.Command {
	var file, after string
	cmd := &cobra.Command{
		Use:   "export [--file FILE] [--after CURSOR] > FILE",
		Short: "Write the encrypted records you may export as NDJSON (no plaintext): yours, or the tenant's for admins and machines",
		Long: `Write the encrypted records you may export, one JSON record per line, to standard output or
--file: a member gets their own items, a tenant admin or a machine with scope export (CUSTOS_API_KEY)
the tenant's. No plaintext and no key is in it; custos import restores it unchanged. The summary
goes to standard error (to standard output with --file).

--file FILE is written as a new file beside it (0600) that replaces FILE only once the export is
complete: a failed export leaves an earlier backup in FILE as it was.

If an export breaks off, what was written is complete records, and the error says how to go on:
--after CURSOR resumes after the last of them, appending to --file rather than replacing it (or, on
standard output, to what you append it to: >> FILE). With --file, the records of the broken-off
export are kept in FILE.partial: resume into it, then rename it to FILE.`,
		Args: cobra.NoArgs,
		RunE: run(func(cmd *cobra.Command, _ []string) error {
			if file == "" && e.stdoutIsTerminal() {
				return usageErr("the export is meant for a file: redirect it (custos export > backup.ndjson) or give --file")
			}
			c, _, err := e.connect()
			if err != nil {
				return err
			}
			defer c.Close()
			w := e.stdout
			summary := e.stderr
			var out *exportFile
			if file != "" {
				if out, err = openExportFile(file, after != ""); err != nil {
					return fmt.Errorf("export: %w", err)
				}
				defer out.discard()
				w, summary = out.f, e.stdout
			}
			bar := e.progress("exporting")
			opts := []client.ExportOption{client.ExportProgress(func(n int) { bar.count(int64(n), "records") })}
			if after != "" {
				opts = append(opts, client.ExportAfter(after))
			}
			res, err := c.Export(cmd.Context(), w, opts...)
			bar.done()
			if err != nil {
				return brokeOff(err, res, file, out)
			}
			if out != nil {
				if err := out.commit(); err != nil {
					return fmt.Errorf("export: %w", err)
				}
			}
			if e.json() {
				raw := fmt.Sprintf(`{"records":%d,"lastCursor":%q}`, res.Records, res.LastCursor)
				fmt.Fprintln(summary, raw)
				return nil
			}
			fmt.Fprintf(summary, "Exported %d records.\n", res.Records)
			return nil
		}),
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "write to FILE (0600, replaced once the export is complete) instead of standard output")
	cmd.Flags().StringVar(&after, "after", "", "resume after the record with this cursor, appending to --file")
	return cmd
}

// exportFile is where export --file writes: a new file beside FILE that replaces it once the
// export is complete, or, to resume (--after), FILE itself, appended to.
type exportFile struct {
	f    *os.File
	path string // FILE
	temp string // the new file; "" when appending, or once renamed
}

// openExportFile opens the file of export --file path: appending to path, or a new file beside
// it. Both are 0600.
func openExportFile(path string, appending bool) (*exportFile, error) {
	if appending {
		f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return nil, err
		}
		if err := f.Chmod(0o600); err != nil { // an existing file may have been readable by others
			f.Close()
			return nil, err
		}
		return &exportFile{f: f, path: path}, nil
	}
	// CreateTemp creates a new file (O_EXCL, 0600): never through a symlink planted in its place.
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return nil, err
	}
	return &exportFile{f: f, path: path, temp: f.Name()}, nil
}

// commit completes the export: the new file replaces FILE.
func (x *exportFile) commit() error { return x.finish(x.path) }

// keepPartial keeps the records of an export that broke off and returns the file holding them:
// FILE when appending to it, else FILE.partial (leaving FILE as it was).
func (x *exportFile) keepPartial() (string, error) {
	if x.temp == "" {
		return x.path, x.finish(x.path)
	}
	return x.path + ".partial", x.finish(x.path + ".partial")
}

// finish writes the file out and, for a new file, renames it to name.
func (x *exportFile) finish(name string) error {
	if err := x.f.Sync(); err != nil {
		return err
	}
	if err := x.f.Close(); err != nil {
		return err
	}
	if x.temp == "" {
		return nil
	}
	if err := os.Rename(x.temp, name); err != nil {
		return err
	}
	x.temp = ""
	return nil
}

// discard closes the file and removes the new file unless it was kept.
func (x *exportFile) discard() {
	_ = x.f.Close() // already closed once finished
	if x.temp != "" {
		_ = os.Remove(x.temp)
	}
}

// brokeOffError is an export that broke off after writing complete records, with how to resume it.
type brokeOffError struct {
	err         error
	records     int
	lastCursor  string
	partialFile string // where the records are kept when that is not FILE itself
	resume      string // the command that carries on
}

func (b *brokeOffError) Error() string { return b.err.Error() }
func (b *brokeOffError) Unwrap() error { return b.err }

// text says, for people, what was kept and how to resume.
func (b *brokeOffError) text() string {
	kept := ""
	if b.partialFile != "" {
		kept = ", kept in " + b.partialFile
	}
	return fmt.Sprintf("custos: the export broke off after %d complete records%s; resume with: %s", b.records, kept, b.resume)
}

// brokeOff turns the failure err of an export to file ("" for standard output, out its file)
// that wrote res into the command's error: with records written, a brokeOffError saying how to
// resume; without, err (and a new file is dropped, so FILE stays as it was).
func brokeOff(err error, res client.ExportResult, file string, out *exportFile) error {
	if res.Records == 0 {
		return err
	}
	b := &brokeOffError{err: err, records: res.Records, lastCursor: res.LastCursor, resume: resumeCommand(file, res.LastCursor)}
	if out == nil {
		return b
	}
	kept, kerr := out.keepPartial()
	if kerr != nil {
		return fmt.Errorf("%w; and the %d records written could not be kept: %w", err, res.Records, kerr)
	}
	if kept != file {
		b.partialFile = kept
		b.resume = resumeCommand(kept, res.LastCursor) + " && mv " + shellQuote(kept) + " " + shellQuote(file)
	}
	return b
}

// resumeCommand is the command that continues an export to file ("" for standard output) after
// cursor.
func resumeCommand(file, cursor string) string {
	if file == "" {
		return "custos export --after " + cursor + " >> FILE"
	}
	return "custos export --file " + shellQuote(file) + " --after " + cursor
}

// shellQuote quotes s for a POSIX shell unless it needs none.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./+=:,@") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func (e *env) importCommand() *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "import [--file FILE] < FILE",
		Short: "Restore an export (tenant admins): every record is stored, or none",
		Args:  cobra.NoArgs,
		RunE: run(func(cmd *cobra.Command, _ []string) error {
			r := e.stdin
			var size int64
			if file != "" {
				f, err := os.Open(file)
				if err != nil {
					return fmt.Errorf("import: %w", err)
				}
				defer f.Close()
				r = f
			} else if e.stdinIsTerminal() {
				return usageErr("import reads an export from standard input: custos import < backup.ndjson (or --file)")
			}
			if f, ok := r.(*os.File); ok {
				if st, err := f.Stat(); err == nil && st.Mode().IsRegular() {
					size = st.Size()
				}
			}
			c, _, err := e.connect()
			if err != nil {
				return err
			}
			defer c.Close()
			bar := e.progress("importing")
			res, err := c.Import(cmd.Context(), e.input(cmd.Context(), r), client.ImportProgress(func(n int64) { bar.bytes(n, size) }))
			bar.done()
			if err != nil {
				return err
			}
			return e.print(res, func(w io.Writer) {
				fmt.Fprintf(w, "Imported %d records (%d were already there, unchanged).\n", res.Imported, res.Unchanged)
			})
		}),
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "read FILE instead of standard input")
	return cmd
}

func (e *env) keysCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "keys", Short: "Rotate the tenant's keys, follow re-encryption jobs, disable unused versions"}
	var wait bool
	var every time.Duration
	rotate := &cobra.Command{
		Use:   "rotate [--wait]",
		Short: "Rotate every key context of the tenant and start moving the items (admins, machines with keys:rotate)",
		Args:  cobra.NoArgs,
		RunE: run(func(cmd *cobra.Command, _ []string) error {
			c, _, err := e.connect()
			if err != nil {
				return err
			}
			defer c.Close()
			rot, err := c.RotateKeys(cmd.Context())
			if err != nil {
				return err
			}
			if wait {
				if rot.Job, err = e.waitJob(cmd, c, rot.Job.ID, every); err != nil {
					return err
				}
			}
			if err := e.print(rot, func(w io.Writer) {
				fmt.Fprintf(w, "Rotated %d key contexts.\n", rot.RotatedContexts)
				printJob(w, rot.Job)
			}); err != nil {
				return err
			}
			return jobOutcome(rot.Job)
		}),
	}
	rotate.Flags().BoolVar(&wait, "wait", false, "wait for the re-encryption job, showing its progress")
	rotate.Flags().DurationVar(&every, "interval", time.Second, "how often --wait polls the job")
	var rwait bool
	var revery time.Duration
	reencrypt := &cobra.Command{
		Use:   "reencrypt [--wait]",
		Short: "Move items to their active key versions: your own zero-knowledge items (with your master key), or an admin's tenant-wide job",
		Args:  cobra.NoArgs,
		RunE: run(func(cmd *cobra.Command, _ []string) error {
			c, t, err := e.connect()
			if err != nil {
				return err
			}
			defer c.Close()
			if t.apiKey == "" {
				if err := e.unlock(cmd.Context(), c); err != nil {
					return err
				}
			}
			job, err := c.StartReencryption(cmd.Context())
			if err != nil {
				return err
			}
			if rwait {
				if job, err = e.waitJob(cmd, c, job.ID, revery); err != nil {
					return err
				}
			}
			if err := e.print(job, func(w io.Writer) { printJob(w, job) }); err != nil {
				return err
			}
			return jobOutcome(job)
		}),
	}
	reencrypt.Flags().BoolVar(&rwait, "wait", false, "wait for the job, showing its progress")
	reencrypt.Flags().DurationVar(&revery, "interval", time.Second, "how often --wait polls the job")
	status := &cobra.Command{
		Use:   "status",
		Short: "Count the tenant's items per key context and version",
		Args:  cobra.NoArgs,
		RunE: run(func(cmd *cobra.Command, _ []string) error {
			c, _, err := e.connect()
			if err != nil {
				return err
			}
			defer c.Close()
			st, err := c.KeyStatus(cmd.Context())
			if err != nil {
				return err
			}
			return e.print(st, func(w io.Writer) {
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "KEY CONTEXT\tOWNER\tMODE\tVERSION\tSTATE\tITEMS")
				for _, kc := range st {
					for _, v := range kc.Versions {
						fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%d\n", kc.EncryptionID, kc.OwnerID, kc.KeyMode, v.Version, v.State, v.ItemCount)
					}
				}
				tw.Flush()
			})
		}),
	}
	job := &cobra.Command{
		Use:   "job ID",
		Short: "Show a re-encryption job",
		Args:  cobra.ExactArgs(1),
		RunE: run(func(cmd *cobra.Command, args []string) error {
			c, _, err := e.connect()
			if err != nil {
				return err
			}
			defer c.Close()
			j, err := c.GetJob(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return e.print(j, func(w io.Writer) { printJob(w, j) })
		}),
	}
	cmd.AddCommand(rotate, reencrypt, status, job, e.keysDisable(), e.keysEnable())
	return cmd
}

func (e *env) keysDisable() *cobra.Command {
	return e.keysVersionCommand((*client.Client).DisableKeyVersion, &cobra.Command{
		Use:   "disable ENCRYPTION_ID VERSION",
		Short: "Disable a key version no item uses any more; VERSION is its number (as keys status prints it) or its id",
		Long: `Disable a version of one of the tenant's key contexts on its encryption service, so that
nothing can be encrypted or decrypted with it any more. Core refuses (exit 7) while items still use
the version, and for the active version: run custos keys rotate --wait (and, in a zero-knowledge
tenant, have the owner run custos keys reencrypt) first. VERSION is the number keys status prints
or the version's id; an unknown context or version exits 4. custos keys enable undoes it.`,
	})
}

func (e *env) keysEnable() *cobra.Command {
	return e.keysVersionCommand((*client.Client).EnableKeyVersion, &cobra.Command{
		Use:   "enable ENCRYPTION_ID VERSION",
		Short: "Make a disabled key version decrypt again, e.g. to read items restored from an old backup",
		Long: `Enable a disabled version of one of the tenant's key contexts again: it decrypts (DECRYPT_ONLY)
but never encrypts. Use it to read items restored (custos import) from a backup made before the
version was disabled, then move them with custos keys reencrypt --wait and disable the version
again. A destroyed version cannot come back (exit 7). VERSION is the number keys status prints or
the version's id; an unknown context or version exits 4.`,
	})
}

// keysVersionCommand completes cmd (Use, Short, Long set) into a command that resolves
// ENCRYPTION_ID VERSION through keys status and applies change to the version.
func (e *env) keysVersionCommand(
	change func(c *client.Client, ctx context.Context, encryptionID, versionID string) (client.KeyVersionStatus, error),
	cmd *cobra.Command,
) *cobra.Command {
	cmd.Args = cobra.ExactArgs(2)
	cmd.RunE = run(func(cmd *cobra.Command, args []string) error {
		ref, err := parseVersionRef(args[1])
		if err != nil {
			return err
		}
		c, _, err := e.connect()
		if err != nil {
			return err
		}
		defer c.Close()
		st, err := c.KeyStatus(cmd.Context())
		if err != nil {
			return err
		}
		encID, v, err := findVersion(st, args[0], ref)
		if err != nil {
			return err
		}
		out, err := change(c, cmd.Context(), encID, v.VersionID)
		if err != nil {
			return err
		}
		if out.Version == 0 { // core could not read the number back; it is the one looked up
			out.Version = v.Version
		}
		return e.print(out, func(w io.Writer) {
			fmt.Fprintf(w, "Version %d (%s) of key context %s is now %s.\n", out.Version, out.VersionID, encID, out.State)
		})
	})
	return cmd
}

// versionRef is a VERSION argument: a version number, or a version id.
type versionRef struct {
	number int
	id     string // canonical UUID, when given one
}

// parseVersionRef reads a VERSION argument: a positive number or a UUID. Anything else is a usage
// error.
func parseVersionRef(s string) (versionRef, error) {
	if id, err := uuid.Parse(s); err == nil {
		return versionRef{id: id.String()}, nil
	}
	if n, err := strconv.Atoi(s); err == nil && n > 0 {
		return versionRef{number: n}, nil
	}
	return versionRef{}, usageErr("VERSION: want a version number (1, 2, …, as keys status prints it) or a version id, got %q", s)
}

// findVersion finds ref among the versions of key context encryptionID in st and returns the
// context's id as st spells it with the version. An unknown context or version is NOT_FOUND.
func findVersion(st []client.KeyContextStatus, encryptionID string, ref versionRef) (string, client.KeyVersionStatus, error) {
	for _, kc := range st {
		if !strings.EqualFold(kc.EncryptionID, encryptionID) {
			continue
		}
		for _, v := range kc.Versions {
			if (ref.id != "" && strings.EqualFold(v.VersionID, ref.id)) || (ref.id == "" && v.Version == ref.number) {
				return kc.EncryptionID, v, nil
			}
		}
		what := fmt.Sprintf("version %d", ref.number)
		if ref.id != "" {
			what = "version " + ref.id
		}
		return "", client.KeyVersionStatus{}, notFound("key context %s has no %s (see: custos keys status)", kc.EncryptionID, what)
	}
	return "", client.KeyVersionStatus{}, notFound("no key context %s in your tenant (see: custos keys status)", encryptionID)
}

// waitJob follows a job to its end, with a progress bar on a terminal.
func (e *env) waitJob(cmd *cobra.Command, c *client.Client, id string, every time.Duration) (client.Job, error) {
	bar := e.progress("re-encrypting")
	j, err := c.WaitJob(cmd.Context(), id, every, func(j client.Job) {
		bar.fraction(clampInt64(j.Done+j.Skipped+j.Failed), clampInt64(j.Total), "items")
	})
	bar.done()
	return j, err
}

func printJob(w io.Writer, j client.Job) {
	fmt.Fprintf(w, "Job %s: %s, %d of %d items moved (%d skipped, %d failed).\n", j.ID, j.State, j.Done, j.Total, j.Skipped, j.Failed)
	if j.Message != "" {
		fmt.Fprintln(w, strings.TrimSpace(j.Message))
	}
	if j.State == client.JobWaitingForKey {
		fmt.Fprintln(w, "Zero-knowledge items wait for their owners: each runs  custos keys reencrypt --wait")
	}
}

// jobOutcome makes a failed job the command's failure (exit code 1).
func jobOutcome(j client.Job) error {
	if j.State == client.JobFailed {
		return &jobFailedError{job: j}
	}
	return nil
}

// clampInt64 converts a count for the progress bar.
func clampInt64(n uint64) int64 {
	if n > math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(n)
}
