package pyinstall

import (
	"archive/zip"
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// venvLayout is where a wheel's parts go in one virtualenv.
type venvLayout struct {
	root    string // the venv
	site    string // lib/pythonX.Y/site-packages
	bin     string
	include string // include/site/pythonX.Y
	shebang string // interpreter path written into scripts
}

// WheelError is a wheel that cannot be installed (bad layout, a path that
// escapes, a RECORD mismatch).
type WheelError struct {
	Wheel string
	Msg   string
}

func (e *WheelError) Error() string { return fmt.Sprintf("wheel %s: %s", e.Wheel, e.Msg) }

func recordDigest(data []byte) string {
	sum := sha256.Sum256(data)
	return "sha256=" + base64.RawURLEncoding.EncodeToString(sum[:])
}

// installWheel unpacks a wheel into the venv the way pip does (PEP 427 /
// PEP 491): the .data directories go to their schemes, #!python scripts get
// the venv's interpreter, console and GUI entry points become scripts, and a
// RECORD listing every installed file replaces the wheel's. Files are
// checked against the wheel's RECORD hashes as they are written.
func installWheel(wheelPath string, lay venvLayout, requested bool) error {
	wname := filepath.Base(wheelPath)
	zr, err := zip.OpenReader(wheelPath)
	if err != nil {
		return &WheelError{Wheel: wname, Msg: err.Error()}
	}
	defer zr.Close()
	var info string
	for _, f := range zr.File {
		parts := strings.Split(f.Name, "/")
		if len(parts) == 2 && strings.HasSuffix(parts[0], ".dist-info") && parts[1] == "METADATA" {
			info = parts[0]
		}
	}
	if info == "" {
		return &WheelError{Wheel: wname, Msg: "no .dist-info/METADATA"}
	}
	data := strings.TrimSuffix(info, ".dist-info") + ".data"
	record := map[string]string{}
	files := map[string]*zip.File{}
	for _, f := range zr.File {
		files[f.Name] = f
	}
	if rf := files[info+"/RECORD"]; rf != nil {
		b, err := readZip(rf)
		if err != nil {
			return &WheelError{Wheel: wname, Msg: "RECORD: " + err.Error()}
		}
		rows, err := csv.NewReader(bytes.NewReader(b)).ReadAll()
		if err != nil {
			return &WheelError{Wheel: wname, Msg: "RECORD: " + err.Error()}
		}
		for _, r := range rows {
			if len(r) >= 2 && r[1] != "" {
				record[r[0]] = r[1]
			}
		}
	} else {
		return &WheelError{Wheel: wname, Msg: "no RECORD"}
	}
	// Remove an installed older version of the same project first.
	if err := removeInstalled(lay, info); err != nil {
		return &WheelError{Wheel: wname, Msg: err.Error()}
	}
	var installed [][3]string // path relative to site, hash, size
	add := func(abs string, content []byte) {
		rel, err := filepath.Rel(lay.site, abs)
		if err != nil {
			rel = abs
		}
		installed = append(installed, [3]string{filepath.ToSlash(rel), recordDigest(content), strconv.Itoa(len(content))})
	}
	for _, f := range zr.File {
		name := f.Name
		if strings.HasSuffix(name, "/") {
			continue
		}
		if name == info+"/RECORD" || name == info+"/RECORD.jws" || name == info+"/RECORD.p7s" {
			continue
		}
		clean := path.Clean(name)
		if clean != name || strings.HasPrefix(name, "/") || clean == ".." || strings.HasPrefix(clean, "../") || strings.Contains(name, "\\") {
			return &WheelError{Wheel: wname, Msg: fmt.Sprintf("unsafe path %q", name)}
		}
		content, err := readZip(f)
		if err != nil {
			return &WheelError{Wheel: wname, Msg: fmt.Sprintf("%s: %v", name, err)}
		}
		if want, ok := record[name]; ok && strings.HasPrefix(want, "sha256=") && want != recordDigest(content) {
			return &WheelError{Wheel: wname, Msg: fmt.Sprintf("%s does not match its RECORD hash", name)}
		}
		dst := filepath.Join(lay.site, filepath.FromSlash(name))
		mode := os.FileMode(0o644)
		if f.Mode()&0o111 != 0 {
			mode = 0o755
		}
		if rest, ok := strings.CutPrefix(name, data+"/"); ok {
			scheme, sub, _ := strings.Cut(rest, "/")
			switch scheme {
			case "purelib", "platlib":
				dst = filepath.Join(lay.site, filepath.FromSlash(sub))
			case "scripts":
				dst = filepath.Join(lay.bin, filepath.FromSlash(sub))
				mode = 0o755
				content = fixShebang(content, lay.shebang)
			case "headers":
				dst = filepath.Join(lay.include, filepath.FromSlash(sub))
			case "data":
				dst = filepath.Join(lay.root, filepath.FromSlash(sub))
			default:
				return &WheelError{Wheel: wname, Msg: fmt.Sprintf("unknown .data scheme %q", scheme)}
			}
		}
		if err := writeInstalled(dst, content, mode); err != nil {
			return &WheelError{Wheel: wname, Msg: err.Error()}
		}
		add(dst, content)
	}
	// Entry points.
	if ep := files[info+"/entry_points.txt"]; ep != nil {
		b, err := readZip(ep)
		if err != nil {
			return &WheelError{Wheel: wname, Msg: err.Error()}
		}
		scripts, err := parseEntryPoints(b)
		if err != nil {
			return &WheelError{Wheel: wname, Msg: err.Error()}
		}
		for _, s := range scripts {
			content := []byte(scriptSource(lay.shebang, s.module, s.attr))
			dst := filepath.Join(lay.bin, s.name)
			if err := writeInstalled(dst, content, 0o755); err != nil {
				return &WheelError{Wheel: wname, Msg: err.Error()}
			}
			add(dst, content)
		}
	}
	extra := map[string][]byte{"INSTALLER": []byte("paaskit\n")}
	if requested {
		extra["REQUESTED"] = nil
	}
	for n, content := range extra {
		dst := filepath.Join(lay.site, info, n)
		if err := writeInstalled(dst, content, 0o644); err != nil {
			return &WheelError{Wheel: wname, Msg: err.Error()}
		}
		add(dst, content)
	}
	sort.Slice(installed, func(i, j int) bool { return installed[i][0] < installed[j][0] })
	var rec bytes.Buffer
	w := csv.NewWriter(&rec)
	for _, r := range installed {
		_ = w.Write(r[:])
	}
	_ = w.Write([]string{info + "/RECORD", "", ""})
	w.Flush()
	if err := writeInstalled(filepath.Join(lay.site, info, "RECORD"), rec.Bytes(), 0o644); err != nil {
		return &WheelError{Wheel: wname, Msg: err.Error()}
	}
	return nil
}

func readZip(f *zip.File) ([]byte, error) {
	if f.UncompressedSize64 > 1<<30 {
		return nil, errors.New("file too large")
	}
	rc, err := f.Open()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(io.LimitReader(rc, int64(f.UncompressedSize64)+1))
}

func writeInstalled(dst string, content []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	// Replace, never write through, whatever is there.
	_ = os.Remove(dst)
	if err := os.WriteFile(dst, content, mode); err != nil {
		return err
	}
	return os.Chmod(dst, mode)
}

// fixShebang rewrites a "#!python" or "#!pythonw" first line (PEP 427) to
// the given interpreter.
func fixShebang(content []byte, python string) []byte {
	if !bytes.HasPrefix(content, []byte("#!python")) {
		return content
	}
	nl := bytes.IndexByte(content, '\n')
	if nl < 0 {
		nl = len(content)
	}
	rest := content[nl:]
	return append([]byte("#!"+python), rest...)
}

type entryPoint struct{ name, module, attr string }

// parseEntryPoints returns the console_scripts and gui_scripts of an
// entry_points.txt, sorted by name.
func parseEntryPoints(b []byte) ([]entryPoint, error) {
	var out []entryPoint
	section := ""
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";") {
			continue
		}
		if strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]") {
			section = strings.TrimSpace(line[1 : len(line)-1])
			continue
		}
		if section != "console_scripts" && section != "gui_scripts" {
			continue
		}
		name, val, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("entry_points.txt: malformed line %q", line)
		}
		name, val = strings.TrimSpace(name), strings.TrimSpace(val)
		if i := strings.IndexByte(val, '['); i >= 0 {
			val = strings.TrimSpace(val[:i])
		}
		mod, attr, _ := strings.Cut(val, ":")
		mod, attr = strings.TrimSpace(mod), strings.TrimSpace(attr)
		if name == "" || mod == "" || strings.ContainsAny(name, "/\\") || name == "." || name == ".." {
			return nil, fmt.Errorf("entry_points.txt: bad entry %q", line)
		}
		out = append(out, entryPoint{name: name, module: mod, attr: attr})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out, sc.Err()
}

// scriptSource is a console-script wrapper like the one pip writes.
func scriptSource(python, module, attr string) string {
	imp := "import " + module
	call := module
	if attr != "" {
		top, _, _ := strings.Cut(attr, ".")
		imp = fmt.Sprintf("from %s import %s", module, top)
		call = attr
	}
	return fmt.Sprintf(`#!%s
# -*- coding: utf-8 -*-
import re
import sys
%s
if __name__ == '__main__':
    sys.argv[0] = re.sub(r'(-script\.pyw|\.exe)?$', '', sys.argv[0])
    sys.exit(%s())
`, python, imp, call)
}

// removeInstalled removes files of an installed distribution of the same
// project as the dist-info dir newInfo ("name-version.dist-info"), using
// its RECORD, and only inside the venv.
func removeInstalled(lay venvLayout, newInfo string) error {
	project := NormalizeName(strings.SplitN(strings.TrimSuffix(newInfo, ".dist-info"), "-", 2)[0])
	ents, err := os.ReadDir(lay.site)
	if err != nil {
		return err
	}
	for _, e := range ents {
		n := e.Name()
		if !e.IsDir() || !strings.HasSuffix(n, ".dist-info") {
			continue
		}
		if NormalizeName(strings.SplitN(strings.TrimSuffix(n, ".dist-info"), "-", 2)[0]) != project {
			continue
		}
		infoDir := filepath.Join(lay.site, n)
		if b, err := os.ReadFile(filepath.Join(infoDir, "RECORD")); err == nil {
			rows, _ := csv.NewReader(bytes.NewReader(b)).ReadAll()
			for _, r := range rows {
				if len(r) == 0 {
					continue
				}
				p := filepath.Clean(filepath.Join(lay.site, filepath.FromSlash(r[0])))
				if p == lay.root || !strings.HasPrefix(p, lay.root+string(filepath.Separator)) {
					continue
				}
				_ = os.Remove(p)
			}
		}
		if err := os.RemoveAll(infoDir); err != nil {
			return err
		}
	}
	return nil
}
