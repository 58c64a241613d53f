package pyinstall

import (
	"archive/tar"
	"archive/zip"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// coreMetadata is the part of a distribution's core metadata (METADATA or
// PKG-INFO) the installer needs.
type coreMetadata struct {
	MetadataVersion string
	Name, Version   string
	RequiresPython  string
	RequiresDist    []string
	Dynamic         []string
}

// parseCoreMetadata reads the RFC 822-style header block of a METADATA or
// PKG-INFO file.
func parseCoreMetadata(data []byte) (*coreMetadata, error) {
	md := &coreMetadata{}
	var last *string
	for _, line := range strings.Split(strings.ReplaceAll(string(data), "\r\n", "\n"), "\n") {
		if line == "" {
			break // the body (long description) follows
		}
		if line[0] == ' ' || line[0] == '\t' {
			if last != nil {
				*last += " " + strings.TrimSpace(line)
			}
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			return nil, fmt.Errorf("core metadata: malformed line %q", line)
		}
		v = strings.TrimSpace(v)
		last = nil
		switch strings.ToLower(k) {
		case "metadata-version":
			md.MetadataVersion = v
		case "name":
			md.Name = v
		case "version":
			md.Version = v
		case "requires-python":
			md.RequiresPython = v
		case "requires-dist":
			md.RequiresDist = append(md.RequiresDist, v)
			last = &md.RequiresDist[len(md.RequiresDist)-1]
		case "dynamic":
			md.Dynamic = append(md.Dynamic, strings.ToLower(v))
		}
	}
	if md.Name == "" || md.Version == "" {
		return nil, errors.New("core metadata: no Name or Version")
	}
	return md, nil
}

// staticDeps reports whether an sdist's PKG-INFO can be trusted for
// Requires-Dist (PEP 643: Metadata-Version 2.2 or later and not Dynamic).
func (md *coreMetadata) staticDeps() bool {
	var major, minor int
	if _, err := fmt.Sscanf(md.MetadataVersion, "%d.%d", &major, &minor); err != nil {
		return false
	}
	if major < 2 || major == 2 && minor < 2 {
		return false
	}
	for _, d := range md.Dynamic {
		if d == "requires-dist" {
			return false
		}
	}
	return true
}

// wheelMetadata reads METADATA from a wheel file.
func wheelMetadata(path string) (*coreMetadata, error) {
	return zipMetadata(path, func(parts []string) bool {
		return len(parts) == 2 && strings.HasSuffix(parts[0], ".dist-info") && parts[1] == "METADATA"
	}, "wheel has no .dist-info/METADATA")
}

// zipMetadata parses the first entry of the zip file at path whose
// slash-separated name parts match, read up to 16 MiB.
func zipMetadata(path string, match func(parts []string) bool, missing string) (*coreMetadata, error) {
	zr, err := zip.OpenReader(path)
	if err != nil {
		return nil, err
	}
	defer zr.Close()
	for _, f := range zr.File {
		if !match(strings.Split(f.Name, "/")) {
			continue
		}
		rc, err := f.Open()
		if err != nil {
			return nil, err
		}
		data, err := io.ReadAll(io.LimitReader(rc, 16<<20))
		rc.Close()
		if err != nil {
			return nil, err
		}
		return parseCoreMetadata(data)
	}
	return nil, errors.New(missing)
}

// sdistMetadata reads the top-level PKG-INFO of a .tar.gz or .zip sdist
// (filename tells which) without unpacking anything else.
func sdistMetadata(path, filename string) (*coreMetadata, error) {
	if strings.HasSuffix(filename, ".zip") {
		return zipMetadata(path, func(parts []string) bool {
			return len(parts) == 2 && parts[1] == "PKG-INFO"
		}, "sdist has no PKG-INFO")
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		return nil, err
	}
	tr := tar.NewReader(gz)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil, errors.New("sdist has no PKG-INFO")
		}
		if err != nil {
			return nil, err
		}
		name := strings.TrimPrefix(h.Name, "./")
		if parts := strings.Split(name, "/"); len(parts) == 2 && parts[1] == "PKG-INFO" && h.Typeflag == tar.TypeReg {
			data, err := io.ReadAll(io.LimitReader(tr, 16<<20))
			if err != nil {
				return nil, err
			}
			return parseCoreMetadata(data)
		}
	}
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
