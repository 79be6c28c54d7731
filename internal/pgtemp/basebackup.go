package pgtemp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// copyBaseBackup fills s.dataDir with a base backup of primary taken the
// way pg_basebackup takes one, for server packages that ship no
// pg_basebackup (the npm registry's, which the version matrix runs on; a
// distribution's pg_basebackup refuses servers newer than itself): the
// low-level backup API around a file copy of the primary's data directory
// (we are on the same machine), then the WAL written meanwhile, then
// standby.signal and primary_conninfo as pg_basebackup -R writes them.
//
// A temporary physical replication slot, held by the backup's session until
// the copy is done, keeps the primary from recycling WAL the standby needs.
// PostgreSQL writes full-page images while a backup runs whatever
// full_page_writes says, so pages torn by the copy are repaired by replay.
func (s *Server) copyBaseBackup(primaryURL, primaryDataDir string, primaryPort int) (err error) {
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, primaryURL)
	if err != nil {
		return fmt.Errorf("pgtemp: base backup: connect to the primary: %w", err)
	}
	defer conn.Close(context.Background())

	var version int
	if err := conn.QueryRow(ctx, "SELECT current_setting('server_version_num')::int").Scan(&version); err != nil {
		return fmt.Errorf("pgtemp: base backup: %w", err)
	}
	slot := fmt.Sprintf("pgtemp_backup_%d_%d", os.Getpid(), time.Now().UnixNano())
	if _, err := conn.Exec(ctx, "SELECT pg_create_physical_replication_slot($1, true, true)", slot); err != nil {
		return fmt.Errorf("pgtemp: base backup: temporary replication slot: %w", err)
	}
	// The functions were renamed in 15 (and the exclusive mode removed).
	start, stop := "SELECT pg_backup_start('pgtemp', true)", "SELECT labelfile, spcmapfile FROM pg_backup_stop(false)"
	if version < 150000 {
		start, stop = "SELECT pg_start_backup('pgtemp', true, false)", "SELECT labelfile, spcmapfile FROM pg_stop_backup(false, false)"
	}
	if _, err := conn.Exec(ctx, start); err != nil {
		return fmt.Errorf("pgtemp: base backup: start: %w", err)
	}
	if err := s.copyDataDir(primaryDataDir); err != nil {
		return err
	}
	var label, spcmap string
	if err := conn.QueryRow(ctx, stop).Scan(&label, &spcmap); err != nil {
		return fmt.Errorf("pgtemp: base backup: stop: %w", err)
	}
	// pg_backup_stop switched to a new WAL segment, so the segments now
	// in pg_wal hold everything from the backup's start to its end.
	if err := s.copyTree(filepath.Join(primaryDataDir, "pg_wal"), filepath.Join(s.dataDir, "pg_wal"), func(string, fs.DirEntry) bool { return false }); err != nil {
		return err
	}
	files := map[string]string{
		"backup_label":   label,
		"standby.signal": "",
	}
	if spcmap != "" {
		files["tablespace_map"] = spcmap
	}
	for name, content := range files {
		if err := s.writeDataFile(name, content, os.O_CREATE|os.O_TRUNC|os.O_WRONLY); err != nil {
			return err
		}
	}
	conninfo := fmt.Sprintf("\n# Written by pgtemp's base backup, as pg_basebackup -R would.\nprimary_conninfo = 'user=postgres host=%s port=%d sslmode=disable'\n", host, primaryPort)
	return s.writeDataFile("postgresql.auto.conf", conninfo, os.O_CREATE|os.O_APPEND|os.O_WRONLY)
}

// copyDataDir copies the primary's data directory into s.dataDir, leaving
// out what pg_basebackup leaves out: the postmaster's files, a backup's
// own files, WAL (copied after the backup ends), and the contents of the
// directories whose files are runtime state rebuilt at start-up.
func (s *Server) copyDataDir(src string) error {
	skipFiles := map[string]bool{
		"postmaster.pid": true, "postmaster.opts": true,
		"backup_label": true, "backup_label.old": true, "tablespace_map": true,
		"standby.signal": true, "recovery.signal": true,
		"pg_internal.init": true,
	}
	emptyDirs := map[string]bool{
		"pg_wal": true, "pg_replslot": true, "pg_dynshmem": true, "pg_notify": true,
		"pg_serial": true, "pg_snapshots": true, "pg_stat_tmp": true, "pg_subtrans": true,
	}
	return s.copyTree(src, s.dataDir, func(rel string, d fs.DirEntry) bool {
		if strings.HasPrefix(d.Name(), "pgsql_tmp") {
			return true
		}
		top, below, _ := strings.Cut(rel, string(filepath.Separator))
		if below != "" && emptyDirs[top] {
			// pg_wal keeps its subdirectories (archive_status...).
			return !(top == "pg_wal" && d.IsDir())
		}
		return !d.IsDir() && skipFiles[d.Name()]
	})
}

// copyTree copies the tree at src into dst (which exists), owned by the
// server user, with the source's modes, except what skip says. Files that
// vanish while we copy (a dropped relation, a recycled segment) are left
// out, as the primary goes on working.
func (s *Server) copyTree(src, dst string, skip func(rel string, d fs.DirEntry) bool) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return fmt.Errorf("pgtemp: base backup: %w", err)
		}
		rel, err := filepath.Rel(src, path)
		if err != nil || rel == "." {
			return err
		}
		if skip(rel, d) {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		target := filepath.Join(dst, rel)
		info, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		} else if err != nil {
			return fmt.Errorf("pgtemp: base backup: %w", err)
		}
		switch {
		case d.IsDir():
			if err := os.Mkdir(target, info.Mode().Perm()); err != nil && !errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("pgtemp: base backup: %w", err)
			}
		case info.Mode().IsRegular():
			if err := copyFile(path, target, info.Mode().Perm()); err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil
				}
				return fmt.Errorf("pgtemp: base backup: %w", err)
			}
		default:
			// Symlinks (tablespaces) and sockets: the throwaway servers
			// have none.
			return nil
		}
		return s.chown(target)
	})
}

func copyFile(src, dst string, perm fs.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, perm)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// writeDataFile writes content to the data directory's file name, owned by
// the server user.
func (s *Server) writeDataFile(name, content string, flag int) error {
	path := filepath.Join(s.dataDir, name)
	f, err := os.OpenFile(path, flag, 0o600)
	if err != nil {
		return fmt.Errorf("pgtemp: base backup: %w", err)
	}
	_, err = f.WriteString(content)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("pgtemp: base backup: write %s: %w", name, err)
	}
	return s.chown(path)
}

// chown gives path to the server user when it is not ourselves.
func (s *Server) chown(path string) error {
	if s.cred == nil {
		return nil
	}
	if err := os.Lchown(path, int(s.cred.Uid), int(s.cred.Gid)); err != nil {
		return fmt.Errorf("pgtemp: base backup: chown %s: %w", path, err)
	}
	return nil
}

// hasTool reports whether dir holds the executable name.
func hasTool(dir, name string) bool {
	fi, err := os.Stat(filepath.Join(dir, name))
	return err == nil && !fi.IsDir() && fi.Mode().Perm()&0o111 != 0
}
