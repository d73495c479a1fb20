/* The exec path of an emulated phone whose instruction set is not this machine's.
 *
 * Preloaded (LD_PRELOAD) into every command the phone runs, it decides, for each program a
 * command starts through execve, execv, execvp or execvpe, who executes it:
 *
 *   - an ELF file of the phone's machine (EDGEFARM_MACHINE, e.g. EM_AARCH64): qemu-user
 *     (EDGEFARM_QEMU -L EDGEFARM_SYSROOT), in the same process, so its pid, its arguments
 *     (argv[0] kept with -0) and its environment are the program's own;
 *   - any other ELF file in the phone's storage (/data, /sdcard, or the prefixes listed in
 *     EDGEFARM_PHONE_STORAGE, colon-separated): nobody; the call fails with ENOEXEC ("Exec
 *     format error"), as a program built for another machine fails on a phone;
 *   - everything else (the phone's shell and tools, which stand for its system image): the
 *     host, as before.
 *
 * binfmt_misc would do the first without a preload, but it is a host-wide setting, which a CI
 * machine or a container may lack or forbid; and it cannot refuse the host's own machine's
 * binaries in /data. This is edgefarm's own code, built by the emulator (see isa.py) with
 * EDGEFARM_QEMU, EDGEFARM_SYSROOT and EDGEFARM_MACHINE defined.
 *
 * Only what may run between fork and exec is used: no allocation, the argument vector on the
 * stack.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#if !defined(EDGEFARM_QEMU) || !defined(EDGEFARM_SYSROOT) || !defined(EDGEFARM_MACHINE)
#error "build with -DEDGEFARM_QEMU=... -DEDGEFARM_SYSROOT=... -DEDGEFARM_MACHINE=..."
#endif

extern char **environ;

typedef int (*execve_fn)(const char *, char *const[], char *const[]);

enum verdict { HOST, GUEST, REFUSED };

static execve_fn real_execve(void) {
  static execve_fn fn;
  if (fn == NULL) fn = (execve_fn)dlsym(RTLD_NEXT, "execve");
  return fn;
}

static int under(const char *path, const char *prefix, size_t len) {
  return len > 0 && strncmp(path, prefix, len) == 0 && (path[len] == '/' || path[len] == '\0');
}

static int in_storage(const char *resolved) {
  const char *prefixes = getenv("EDGEFARM_PHONE_STORAGE");
  if (prefixes == NULL || *prefixes == '\0') prefixes = "/data:/sdcard";
  const char *p = prefixes;
  while (*p != '\0') {
    const char *end = strchr(p, ':');
    size_t len = end ? (size_t)(end - p) : strlen(p);
    if (under(resolved, p, len)) return 1;
    if (end == NULL) break;
    p = end + 1;
  }
  return 0;
}

static enum verdict judge(const char *path) {
  unsigned char header[20];
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return HOST; /* the real exec reports why */
  ssize_t n = read(fd, header, sizeof header);
  close(fd);
  if (n < (ssize_t)sizeof header || memcmp(header, "\177ELF", 4) != 0) return HOST;
  unsigned machine = header[5] == 2 ? (unsigned)(header[18] << 8 | header[19])
                                    : (unsigned)(header[18] | header[19] << 8);
  if (machine == EDGEFARM_MACHINE) return GUEST;
  char resolved[PATH_MAX];
  if (realpath(path, resolved) != NULL && in_storage(resolved)) return REFUSED;
  return HOST;
}

static int exec_guest(const char *path, char *const argv[], char *const envp[]) {
  size_t argc = 0;
  while (argv != NULL && argv[argc] != NULL) argc++;
  char *args[argc + 10];
  size_t i = 0;
  args[i++] = (char *)EDGEFARM_QEMU;
  args[i++] = (char *)"-L";
  args[i++] = (char *)EDGEFARM_SYSROOT;
  args[i++] = (char *)"-U"; /* this library is the host's: not for the guest's loader */
  args[i++] = (char *)"LD_PRELOAD";
  args[i++] = (char *)"-0";
  args[i++] = argc > 0 ? argv[0] : (char *)path;
  args[i++] = (char *)path;
  for (size_t k = 1; k < argc; k++) args[i++] = argv[k];
  args[i] = NULL;
  return real_execve()(EDGEFARM_QEMU, args, envp);
}

static int dispatch(const char *path, char *const argv[], char *const envp[]) {
  switch (judge(path)) {
    case GUEST:
      return exec_guest(path, argv, envp);
    case REFUSED:
      errno = ENOEXEC;
      return -1;
    default:
      return real_execve()(path, argv, envp);
  }
}

int execve(const char *path, char *const argv[], char *const envp[]) {
  return dispatch(path, argv, envp);
}

int execv(const char *path, char *const argv[]) { return dispatch(path, argv, environ); }

int execvpe(const char *file, char *const argv[], char *const envp[]) {
  typedef int (*execvpe_fn)(const char *, char *const[], char *const[]);
  static execvpe_fn real;
  if (real == NULL) real = (execvpe_fn)dlsym(RTLD_NEXT, "execvpe");
  if (strchr(file, '/') != NULL) return dispatch(file, argv, envp);
  /* The program PATH finds first decides; the host's execvpe does everything else (errors,
   * scripts without #!) as it always does. */
  const char *search = getenv("PATH");
  if (search == NULL) search = "/bin:/usr/bin";
  size_t file_len = strlen(file);
  const char *p = search;
  while (file_len > 0) {
    const char *end = strchr(p, ':');
    size_t len = end ? (size_t)(end - p) : strlen(p);
    char candidate[PATH_MAX];
    if (len + 1 + file_len + 1 <= sizeof candidate) {
      size_t at = 0;
      if (len > 0) { /* an empty entry is the current directory */
        memcpy(candidate, p, len);
        candidate[len] = '/';
        at = len + 1;
      }
      memcpy(candidate + at, file, file_len + 1);
      if (access(candidate, X_OK) == 0) {
        enum verdict verdict = judge(candidate);
        if (verdict == GUEST) return exec_guest(candidate, argv, envp);
        if (verdict == REFUSED) {
          errno = ENOEXEC;
          return -1;
        }
        break;
      }
    }
    if (end == NULL) break;
    p = end + 1;
  }
  return real(file, argv, envp);
}

int execvp(const char *file, char *const argv[]) { return execvpe(file, argv, environ); }
