package upload

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/paaskit/paaskit/upload/extract"
	"github.com/paaskit/paaskit/upload/pyinstall"
)

// BuilderConfig configures a Builder. Zero values are the defaults.
type BuilderConfig struct {
	// WorkDir holds each build's scratch tree (removed afterwards).
	// Default os.TempDir().
	WorkDir string
	// StoreDir is the image store. Required.
	StoreDir string
	// Installer installs requirements.txt; nil means bundles with a
	// requirements.txt are refused.
	Installer *pyinstall.Installer
	// AppRoot is where runner shows the image inside a sandbox; scripts
	// in the virtualenv get AppRoot/venv/bin/python as their
	// interpreter. Default "/app".
	AppRoot string
	// Extract bounds bundle extraction.
	Extract extract.Config
	// Image configures mksquashfs.
	Image ImageConfig
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

// Builder turns an uploaded bundle into an app image: extract the bundle,
// install its requirements.txt (if any) into venv/ beside the code, and pack
// the tree into a SquashFS image. It is what the upload endpoint calls for
// each push.
type Builder struct {
	cfg BuilderConfig
}

// NewBuilder validates cfg.
func NewBuilder(cfg BuilderConfig) (*Builder, error) {
	if cfg.StoreDir == "" {
		return nil, errors.New("upload: BuilderConfig.StoreDir is required")
	}
	if cfg.WorkDir == "" {
		cfg.WorkDir = os.TempDir()
	}
	if cfg.AppRoot == "" {
		cfg.AppRoot = "/app"
	}
	if !filepath.IsAbs(cfg.AppRoot) {
		return nil, fmt.Errorf("upload: AppRoot %q is not absolute", cfg.AppRoot)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Extract.Logger == nil {
		cfg.Extract.Logger = cfg.Logger
	}
	if cfg.Image.Logger == nil {
		cfg.Image.Logger = cfg.Logger
	}
	return &Builder{cfg: cfg}, nil
}

// Build reads a bundle (tar, tar.gz or zip) and returns its image. A hostile
// bundle, a failed install or a failed image build is an error and leaves
// nothing in the store.
func (b *Builder) Build(ctx context.Context, bundle io.Reader, format extract.Format) (*Image, error) {
	work, err := os.MkdirTemp(b.cfg.WorkDir, "upload-build-")
	if err != nil {
		return nil, fmt.Errorf("upload: build: %w", err)
	}
	defer os.RemoveAll(work)
	tree := filepath.Join(work, "app")
	if err := extract.Extract(ctx, bundle, tree, format, b.cfg.Extract); err != nil {
		return nil, fmt.Errorf("upload: bundle: %w", err)
	}
	reqPath := filepath.Join(tree, "requirements.txt")
	if fi, err := os.Lstat(reqPath); err == nil && fi.Mode().IsRegular() {
		if b.cfg.Installer == nil {
			return nil, errors.New("upload: bundle has requirements.txt but the builder has no installer")
		}
		// The file came with the upload: it may not read outside its tree.
		reqs, err := pyinstall.ParseRequirementsFileIn(tree, reqPath)
		if err != nil {
			return nil, fmt.Errorf("upload: %w", err)
		}
		res, err := b.cfg.Installer.Install(ctx, reqs, filepath.Join(tree, "venv"), pyinstall.InstallOptions{
			ScriptPython: filepath.Join(b.cfg.AppRoot, "venv", "bin", "python"),
		})
		if err != nil {
			return nil, fmt.Errorf("upload: install requirements: %w", err)
		}
		// Make the venv name AppRoot/venv, not this scratch path, so the
		// same bundle gives the same image (activate scripts and
		// pyvenv.cfg record the path they were made at).
		if err := relocateVenv(filepath.Join(tree, "venv"), filepath.Join(b.cfg.AppRoot, "venv")); err != nil {
			return nil, fmt.Errorf("upload: relocate venv: %w", err)
		}
		b.cfg.Logger.Info("upload: requirements installed", "packages", len(res.Packages), "built", res.Built, "cache_hits", res.CacheHits, "elapsed", res.Total)
	}
	return BuildImage(ctx, tree, b.cfg.StoreDir, b.cfg.Image)
}

// relocateVenv rewrites the virtualenv's own path to newPath in pyvenv.cfg
// and the regular files of bin/ (activate scripts).
func relocateVenv(venv, newPath string) error {
	old := []byte(venv)
	files := []string{filepath.Join(venv, "pyvenv.cfg")}
	ents, err := os.ReadDir(filepath.Join(venv, "bin"))
	if err != nil {
		return err
	}
	for _, e := range ents {
		if e.Type().IsRegular() {
			files = append(files, filepath.Join(venv, "bin", e.Name()))
		}
	}
	for _, f := range files {
		fi, err := os.Lstat(f)
		if err != nil || !fi.Mode().IsRegular() || fi.Size() > 1<<20 {
			continue
		}
		data, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		if !bytes.Contains(data, old) {
			continue
		}
		if err := os.WriteFile(f, bytes.ReplaceAll(data, old, []byte(newPath)), fi.Mode().Perm()); err != nil {
			return err
		}
	}
	return nil
}
