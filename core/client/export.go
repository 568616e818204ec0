package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"google.golang.org/grpc/metadata"

	corev1 "github.com/custos-platform/custos/proto/gen/custos/core/v1"
)

// ExportOption adjusts an Export.
type ExportOption func(*exportOptions)

type exportOptions struct {
	cursor   string
	progress func(records int)
}

// ExportAfter resumes an export after the record whose cursor is given.
func ExportAfter(cursor string) ExportOption { return func(o *exportOptions) { o.cursor = cursor } }

// ExportProgress calls f after each record written, with the count so far.
func ExportProgress(f func(records int)) ExportOption {
	return func(o *exportOptions) { o.progress = f }
}

// ExportResult says what an Export wrote.
type ExportResult struct {
	Records    int    `json:"records"`
	LastCursor string `json:"lastCursor,omitempty"` // resume after it with ExportAfter
}

// Export writes the encrypted records the caller may export (a member their own items, a tenant
// admin or a machine with scope export the tenant's) to w as NDJSON, one ExportRecord per line,
// oldest first. No plaintext is ever in it; Import takes the file back unchanged. If the export
// breaks off, what was written is complete records and the result's LastCursor resumes it. An
// access token refused (401) before the first record is refreshed once and the export started
// again, as unary calls are. A core that does not offer export yet answers UNIMPLEMENTED. A
// record over 8 MiB, larger than any core writes (and than Import takes), is refused with an
// error as it is read, and nothing of it is written.
func (c *Client) Export(ctx context.Context, w io.Writer, opts ...ExportOption) (ExportResult, error) {
	var o exportOptions
	for _, opt := range opts {
		opt(&o)
	}
	for retried := false; ; retried = true {
		hdr, used, err := c.credentials(ctx, call{auth: true})
		if err != nil {
			return ExportResult{}, err
		}
		var res ExportResult
		if c.conn != nil {
			res, err = c.exportGRPC(ctx, w, o, hdr)
		} else {
			res, err = c.exportREST(ctx, w, o, hdr)
		}
		if retried || res.Records > 0 {
			return res, err
		}
		if retry, rerr := c.refreshAfter(ctx, used, err); !retry {
			return res, rerr
		}
	}
}

func (c *Client) exportREST(ctx context.Context, w io.Writer, o exportOptions, hdr map[string]string) (ExportResult, error) {
	q := url.Values{}
	if o.cursor != "" {
		q.Set("cursor", o.cursor)
	}
	resp, err := c.do(ctx, http.MethodGet, "/v1/export", q, hdr, nil)
	if err != nil {
		return ExportResult{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return ExportResult{}, restError(resp.StatusCode, firstLine(raw))
	}
	// The gateway streams {"result":{"record":{…}}} per record, or {"error":{…}} if the stream
	// breaks off; the file gets the records only. Lines are read with a bound, so that a broken
	// or hostile core cannot make the client buffer a record of any size.
	var res ExportResult
	body := bufio.NewReaderSize(resp.Body, 64<<10)
	for {
		raw, err := readBoundedLine(body, maxExportLine)
		if errors.Is(err, errLineTooLong) {
			return res, fmt.Errorf("export: record %d is over %d bytes, larger than any export record (and than Import takes): "+
				"refused; the %d records before it are complete", res.Records+1, maxImportLine, res.Records)
		}
		if len(bytes.TrimSpace(raw)) == 0 {
			if err == nil {
				continue // blank lines carry no record
			}
			if errors.Is(err, io.EOF) {
				return res, nil
			}
		}
		var line struct {
			Result *struct {
				Record json.RawMessage `json:"record"`
			} `json:"result"`
			Error json.RawMessage `json:"error"`
		}
		if err != nil && !errors.Is(err, io.EOF) {
			if perr := ctxErr(ctx); perr != nil {
				return res, perr
			}
			return res, unreachable(c.base.Host, fmt.Errorf("export broke off after %d records: %w", res.Records, err))
		}
		if jerr := json.Unmarshal(raw, &line); jerr != nil {
			// A line cut short: the connection broke in the middle of a record.
			return res, unreachable(c.base.Host, fmt.Errorf("export broke off after %d records: %w", res.Records, jerr))
		}
		if line.Error != nil {
			return res, restError(http.StatusInternalServerError, line.Error)
		}
		if line.Result == nil || len(line.Result.Record) == 0 {
			return res, fmt.Errorf("export: record %d: not a record", res.Records+1)
		}
		if err := res.write(w, line.Result.Record, o.progress); err != nil {
			return res, err
		}
	}
}

// maxExportLine bounds a line of the REST export stream: a record of at most maxImportLine bytes
// and its wrapping, {"result":{"record":…}}.
const maxExportLine = maxImportLine + 1<<10

func (r *ExportResult) write(w io.Writer, record []byte, progress func(int)) error {
	var buf bytes.Buffer
	if err := json.Compact(&buf, record); err != nil {
		return fmt.Errorf("export: record %d: %w", r.Records+1, err)
	}
	var c struct {
		Cursor string `json:"cursor"`
	}
	_ = json.Unmarshal(record, &c)
	buf.WriteByte('\n')
	if buf.Len() > maxImportLine {
		return fmt.Errorf("export: record %d is over %d bytes, larger than any export record (and than Import takes): "+
			"refused; the %d records before it are complete", r.Records+1, maxImportLine, r.Records)
	}
	if _, err := w.Write(buf.Bytes()); err != nil {
		return fmt.Errorf("export: write: %w", err)
	}
	r.Records++
	r.LastCursor = c.Cursor
	if progress != nil {
		progress(r.Records)
	}
	return nil
}

func (c *Client) exportGRPC(ctx context.Context, w io.Writer, o exportOptions, hdr map[string]string) (ExportResult, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := corev1.NewExportServiceClient(c.conn).Export(outgoing(ctx, hdr), &corev1.ExportRequest{Cursor: o.cursor})
	if err != nil {
		return ExportResult{}, grpcError(err)
	}
	var res ExportResult
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return res, nil
		}
		if err != nil {
			return res, grpcError(err)
		}
		raw, err := marshal.Marshal(m.GetRecord())
		if err != nil {
			return res, fmt.Errorf("export: record %d: %w", res.Records+1, err)
		}
		if err := res.write(w, raw, o.progress); err != nil {
			return res, err
		}
	}
}

// ImportOption adjusts an Import.
type ImportOption func(*importOptions)

type importOptions struct {
	progress  func(bytes int64)
	partBytes int
}

// ImportProgress calls f as the file is read, with the bytes read so far.
func ImportProgress(f func(bytes int64)) ImportOption {
	return func(o *importOptions) { o.progress = f }
}

// ImportResult says what an Import restored.
type ImportResult struct {
	Imported  int `json:"imported"`  // records stored
	Unchanged int `json:"unchanged"` // already there, identical
}

// Import restores the records of an export read from r (tenant admins only). A record altered
// since the export is refused (INVALID_ARGUMENT naming the record and its integrity); one whose
// item has changed since the export, ALREADY_EXISTS (ErrAlreadyExists) naming the record. An import
// that collided with a concurrent change gets ABORTED (ErrAborted): send it again. Importing the
// same file twice is harmless: records already there count as Unchanged, also after a re-encryption
// job moved them to a new key version. A core that does not offer import yet answers UNIMPLEMENTED.
//
// Core takes at most CORE_MAX_REQUEST_BYTES (4 MiB by default) per import, so Import sends the
// file in parts of whole records of at most ImportPartBytes each (WithImportPartBytes), one request
// per part: each part is stored whole or not at all. When a part fails, the parts before it are
// stored (the result counts them) and the error names the part and its first line: run the
// import again — the stored parts then count as Unchanged.
//
// An access token refused (401) is refreshed and the part sent again (parts are held in memory).
func (c *Client) Import(ctx context.Context, r io.Reader, opts ...ImportOption) (ImportResult, error) {
	o := importOptions{partBytes: ImportPartBytes}
	for _, opt := range opts {
		opt(&o)
	}
	in := r
	if o.progress != nil {
		in = &countingReader{r: r, f: o.progress}
	}
	parts := newPartReader(in, o.partBytes)
	var total ImportResult
	for n := 1; ; n++ {
		part, first, err := parts.next()
		if err != nil {
			return total, importPartError(err, n, first, total)
		}
		if part == nil && n > 1 {
			return total, nil
		}
		res, err := c.importPart(ctx, bytes.NewReader(part))
		total.Imported += res.Imported
		total.Unchanged += res.Unchanged
		if err != nil {
			if n == 1 && parts.done() {
				return total, err // the whole file was one part: the error says it all
			}
			return total, importPartError(err, n, first, total)
		}
		if parts.done() {
			return total, nil
		}
	}
}

// ImportPartBytes is the default size of the parts Import sends: whole records, at most this many
// bytes (a record larger than that goes alone), well within core's default limit of 4 MiB.
const ImportPartBytes = 2 << 20

// WithImportPartBytes sets the size of the parts Import sends (at most core's
// CORE_MAX_REQUEST_BYTES); n < 1 keeps ImportPartBytes.
func WithImportPartBytes(n int) ImportOption {
	return func(o *importOptions) {
		if n > 0 {
			o.partBytes = n
		}
	}
}

// maxImportLine bounds one line of an import file: a record holds an item of at most 1 MiB,
// base64-encoded, with its key references.
const maxImportLine = 8 << 20

// importPartError says which part of an import failed and what was stored before it.
func importPartError(err error, part, firstRecord int, stored ImportResult) error {
	where := fmt.Sprintf("import part %d (from line %d of the file; record numbers in the message count from there)", part, firstRecord)
	done := fmt.Sprintf("parts before it are stored (%d records, %d unchanged); run the import again: they then count as unchanged", stored.Imported, stored.Unchanged)
	if part == 1 {
		done = "nothing was stored"
	}
	var e *Error
	if errors.As(err, &e) {
		again := *e
		again.Message = where + ": " + e.Message + "; " + done
		return &again
	}
	return fmt.Errorf("%s: %w; %s", where, err, done)
}

// partReader cuts an export file into parts of whole lines.
type partReader struct {
	r       *bufio.Reader
	max     int
	pending []byte // the line read past the last part
	line    int    // lines read so far
	eof     bool
}

func newPartReader(r io.Reader, max int) *partReader {
	return &partReader{r: bufio.NewReaderSize(r, 64<<10), max: max}
}

// done reports whether the input is used up.
func (p *partReader) done() bool { return p.eof && p.pending == nil }

// next returns the next part and the number of its first line (from 1); nil at the end (a file
// without records gives one empty part, so that core answers for it).
func (p *partReader) next() ([]byte, int, error) {
	first := p.line + 1
	if p.pending != nil {
		first = p.line
	}
	var part []byte
	for {
		line := p.pending
		p.pending = nil
		if line == nil {
			if p.eof {
				break
			}
			var err error
			line, err = p.readLine()
			if errors.Is(err, io.EOF) {
				p.eof = true
			} else if err != nil {
				return nil, first, err
			}
			if len(bytes.TrimSpace(line)) == 0 {
				continue // blank lines carry no record
			}
		}
		if len(part) > 0 && len(part)+len(line) > p.max {
			p.pending = line
			break
		}
		part = append(part, line...)
	}
	if part == nil && first == 1 {
		return []byte{}, 1, nil
	}
	return part, first, nil
}

// readLine reads one line with its newline (added if the last line lacks one); io.EOF with the
// last line, or alone at the end. A line over maxImportLine is INVALID_ARGUMENT: not a record.
func (p *partReader) readLine() ([]byte, error) {
	line, err := readBoundedLine(p.r, maxImportLine)
	switch {
	case errors.Is(err, errLineTooLong):
		return nil, invalidInput("import: line %d is over %d bytes: not an export record", p.line+1, maxImportLine)
	case errors.Is(err, io.EOF) && len(line) > 0:
		p.line++
		return append(line, '\n'), io.EOF
	case err != nil:
		return nil, err
	}
	p.line++
	return line, nil
}

// errLineTooLong: a line is longer than readBoundedLine may read.
var errLineTooLong = errors.New("line too long")

// readBoundedLine reads one line of r with its newline, of at most max bytes; errLineTooLong for a
// longer one, having read little more than max bytes of it; io.EOF with the last line when it
// lacks a newline, or alone at the end.
func readBoundedLine(r *bufio.Reader, max int) ([]byte, error) {
	var line []byte
	for {
		chunk, err := r.ReadSlice('\n')
		if len(line)+len(chunk) > max {
			return nil, errLineTooLong
		}
		line = append(line, chunk...)
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF) && len(line) == 0:
			return nil, io.EOF
		case err != nil:
			return line, err
		}
		return line, nil
	}
}

// importPart sends one part, refreshing the session and sending it again after a 401.
func (c *Client) importPart(ctx context.Context, part *bytes.Reader) (ImportResult, error) {
	for retried := false; ; retried = true {
		hdr, used, err := c.credentials(ctx, call{auth: true})
		if err != nil {
			return ImportResult{}, err
		}
		var res ImportResult
		if c.conn != nil {
			res, err = c.importGRPC(ctx, part, hdr)
		} else {
			res, err = c.importREST(ctx, part, hdr)
		}
		if retried || used == "" || !errors.Is(err, ErrUnauthenticated) {
			return res, err
		}
		if retry, rerr := c.refreshAfter(ctx, used, err); !retry {
			return res, rerr
		}
		if _, err := part.Seek(0, io.SeekStart); err != nil {
			return res, err
		}
	}
}

func (c *Client) importREST(ctx context.Context, r io.Reader, hdr map[string]string) (ImportResult, error) {
	resp, err := c.do(ctx, http.MethodPost, "/v1/import", nil, hdr, r)
	if err != nil {
		return ImportResult{}, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return ImportResult{}, unreachable(c.base.Host, err)
	}
	if resp.StatusCode != http.StatusOK {
		return ImportResult{}, restError(resp.StatusCode, raw)
	}
	out := &corev1.ImportResponse{}
	if err := unmarshal.Unmarshal(raw, out); err != nil {
		return ImportResult{}, fmt.Errorf("decode the answer of POST /v1/import: %w", err)
	}
	return ImportResult{Imported: int(out.GetImported()), Unchanged: int(out.GetUnchanged())}, nil
}

// importGRPC streams the records of r. A record the client cannot read is refused as core would
// refuse it over REST (400 INVALID_ARGUMENT), and the call cancelled: core stores nothing of it.
func (c *Client) importGRPC(ctx context.Context, r io.Reader, hdr map[string]string) (ImportResult, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := corev1.NewExportServiceClient(c.conn).Import(outgoing(ctx, hdr))
	if err != nil {
		return ImportResult{}, grpcError(err)
	}
	dec := json.NewDecoder(bufio.NewReader(r))
	for n := 1; ; n++ {
		var value json.RawMessage
		if err := dec.Decode(&value); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			cancel() // core stores nothing of a cancelled import
			return ImportResult{}, invalidInput("import: record %d: not JSON: %v; nothing was imported", n, err)
		}
		rec, err := importRecord(value)
		if err != nil {
			cancel()
			return ImportResult{}, invalidInput("import: record %d: %v; nothing was imported", n, err)
		}
		if err := stream.Send(&corev1.ImportRequest{Record: rec}); err != nil {
			if errors.Is(err, io.EOF) {
				break // core ended the call: CloseAndRecv says why
			}
			return ImportResult{}, grpcError(err)
		}
	}
	out, err := stream.CloseAndRecv()
	if err != nil {
		return ImportResult{}, grpcError(err)
	}
	return ImportResult{Imported: int(out.GetImported()), Unchanged: int(out.GetUnchanged())}, nil
}

// importRecord reads one value of an export file: a bare record (as Export writes), an import
// request {"record":…}, or a line of the REST stream {"result":{"record":…}}.
func importRecord(value json.RawMessage) (*corev1.ExportRecord, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(value, &top); err != nil || top == nil {
		return nil, errors.New("not a JSON object")
	}
	raw := value
	switch {
	case top["error"] != nil:
		return nil, errors.New("the export ended with an error here: the file is incomplete")
	case top["result"] != nil && len(top) == 1:
		var result map[string]json.RawMessage
		if err := json.Unmarshal(top["result"], &result); err != nil || result["record"] == nil {
			return nil, errors.New(`result: want {"record":{…}}`)
		}
		raw = result["record"]
	case top["record"] != nil && len(top) == 1:
		raw = top["record"]
	}
	rec := &corev1.ExportRecord{}
	if err := unmarshalStrict.Unmarshal(raw, rec); err != nil {
		return nil, fmt.Errorf("not an export record: %w", err)
	}
	return rec, nil
}

func outgoing(ctx context.Context, hdr map[string]string) context.Context {
	md := metadata.MD{}
	for k, v := range hdr {
		md.Set(strings.ToLower(k), v)
	}
	return metadata.NewOutgoingContext(ctx, md)
}

func firstLine(b []byte) []byte {
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		return b[:i]
	}
	return b
}

type countingReader struct {
	r io.Reader
	n int64
	f func(int64)
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if n > 0 {
		c.f(c.n)
	}
	return n, err
}
