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
// again, as unary calls are. A core that does not offer export yet answers UNIMPLEMENTED.
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
	// breaks off; the file gets the records only.
	var res ExportResult
	dec := json.NewDecoder(resp.Body)
	for {
		var line struct {
			Result *struct {
				Record json.RawMessage `json:"record"`
			} `json:"result"`
			Error json.RawMessage `json:"error"`
		}
		if err := dec.Decode(&line); errors.Is(err, io.EOF) {
			return res, nil
		} else if err != nil {
			if perr := ctxErr(ctx); perr != nil {
				return res, perr
			}
			return res, unreachable(c.base.Host, fmt.Errorf("export broke off after %d records: %w", res.Records, err))
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

type importOptions struct{ progress func(bytes int64) }

// ImportProgress calls f as the file is read, with the bytes read so far.
func ImportProgress(f func(bytes int64)) ImportOption {
	return func(o *importOptions) { o.progress = f }
}

// ImportResult says what an Import restored.
type ImportResult struct {
	Imported  int `json:"imported"`  // records stored
	Unchanged int `json:"unchanged"` // already there, identical
}

// Import restores the records of an export read from r (tenant admins only): every record is
// stored, or none. A record altered since the export is refused (INVALID_ARGUMENT naming the
// record and its integrity); one whose item has changed since the export, ALREADY_EXISTS
// (ErrAlreadyExists) naming the record. An import that collided with a concurrent change stored
// nothing and gets ABORTED (ErrAborted): send the whole file again. Importing the same file twice
// is harmless: records already there count as Unchanged, also after a re-encryption job moved
// them to a new key version. A core that does not offer import yet answers UNIMPLEMENTED.
//
// An access token refused (401) is refreshed and the import sent again when r can be read again
// (an io.Seeker, such as a regular file: it is rewound to where it was); otherwise the session is
// refreshed and the 401 returned, saying to run the import again (nothing was imported).
func (c *Client) Import(ctx context.Context, r io.Reader, opts ...ImportOption) (ImportResult, error) {
	var o importOptions
	for _, opt := range opts {
		opt(&o)
	}
	seeker, start := rewindable(r)
	for retried := false; ; retried = true {
		hdr, used, err := c.credentials(ctx, call{auth: true})
		if err != nil {
			return ImportResult{}, err
		}
		in := r
		if o.progress != nil {
			in = &countingReader{r: r, f: o.progress}
		}
		var res ImportResult
		if c.conn != nil {
			res, err = c.importGRPC(ctx, in, hdr)
		} else {
			res, err = c.importREST(ctx, in, hdr)
		}
		if retried || used == "" || !errors.Is(err, ErrUnauthenticated) {
			return res, err
		}
		if seeker == nil {
			if rerr := c.refresh(ctx, used); rerr != nil {
				return res, rerr
			}
			return res, notAgain(err)
		}
		if retry, rerr := c.refreshAfter(ctx, used, err); !retry {
			return res, rerr
		}
		if _, err := seeker.Seek(start, io.SeekStart); err != nil {
			return res, fmt.Errorf("import: rewind the input to send it again: %w; nothing was imported", err)
		}
	}
}

// rewindable returns r as an io.Seeker with its current offset, or nil if it cannot seek (a pipe,
// a terminal, a network stream).
func rewindable(r io.Reader) (io.Seeker, int64) {
	s, ok := r.(io.Seeker)
	if !ok {
		return nil, 0
	}
	off, err := s.Seek(0, io.SeekCurrent)
	if err != nil {
		return nil, 0
	}
	return s, off
}

// notAgain adds to a 401 of an import whose input cannot be read twice what to do.
func notAgain(err error) error {
	var e *Error
	if !errors.As(err, &e) {
		return err
	}
	again := *e
	again.Message += "; the session has been refreshed, but the input cannot be read a second time: nothing was imported, run the import again"
	return &again
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
