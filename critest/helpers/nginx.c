/* Stand-in for nginx in the web-server test images, built from busybox httpd.
 *
 * The suite looks at nginx from outside, so this reproduces what it sees:
 *  - the master process is named "nginx" (pidof nginx) and its command line
 *    reads "nginx: master process ..." (specs grep /proc/1/cmdline);
 *  - it writes its pid to /var/run/nginx.pid before serving;
 *  - a worker serves the document root on the configured port.
 * Port and root come from the "listen" and "root" directives of
 * /etc/nginx/conf.d/default.conf, as in the images it stands for.
 * The master forwards SIGTERM/SIGINT/SIGQUIT to the worker and exits with it. */
#include <ctype.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define CONF "/etc/nginx/conf.d/default.conf"
#define PIDFILE "/var/run/nginx.pid"
#define TITLE "nginx: master process"

static pid_t worker = -1;

static void forward(int sig) {
    if (worker > 0)
        kill(worker, sig);
}

/* Copies the first argument of directive `name` ("listen 80;") into out. */
static int directive(const char *text, const char *name, char *out, size_t outlen) {
    size_t n = strlen(name);
    for (const char *p = text; (p = strstr(p, name)) != NULL; p += n) {
        int at_word_start = (p == text) || isspace((unsigned char)p[-1]);
        if (!at_word_start || !isspace((unsigned char)p[n]))
            continue;
        const char *v = p + n;
        while (isspace((unsigned char)*v))
            v++;
        size_t len = strcspn(v, "; \t\n");
        if (len == 0 || len >= outlen)
            return -1;
        memcpy(out, v, len);
        out[len] = '\0';
        return 0;
    }
    return -1;
}

int main(int argc, char **argv) {
    /* First run: re-execute ourselves with nginx's process title as the whole
     * command line; the kernel names the process after the file, "nginx". */
    if (strncmp(argv[0], TITLE, strlen(TITLE)) != 0) {
        char title[512];
        size_t used = (size_t)snprintf(title, sizeof title, "%s nginx", TITLE);
        for (int i = 1; i < argc && used < sizeof title; i++)
            used += (size_t)snprintf(title + used, sizeof title - used, " %s", argv[i]);
        /* By its real path, not /proc/self/exe, which would name it "exe". */
        char self[4096];
        ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
        if (n <= 0) {
            perror("nginx: readlink /proc/self/exe");
            return 1;
        }
        self[n] = '\0';
        char *args[] = {title, NULL};
        execv(self, args);
        perror("nginx: re-exec");
        return 1;
    }

    char conf[8192] = "";
    FILE *f = fopen(CONF, "r");
    if (f) {
        size_t got = fread(conf, 1, sizeof conf - 1, f);
        conf[got] = '\0';
        fclose(f);
    }
    char port[32] = "80", root[256] = "/usr/share/nginx/html";
    directive(conf, "listen", port, sizeof port);
    directive(conf, "root", root, sizeof root);

    FILE *pf = fopen(PIDFILE, "w");
    if (!pf) {
        perror("nginx: " PIDFILE);
        return 1;
    }
    fprintf(pf, "%d\n", (int)getpid());
    fclose(pf);

    signal(SIGTERM, forward);
    signal(SIGINT, forward);
    signal(SIGQUIT, forward);

    worker = fork();
    if (worker < 0) {
        perror("nginx: fork");
        return 1;
    }
    if (worker == 0) {
        char *args[] = {"httpd", "-f", "-v", "-p", port, "-h", root, NULL};
        execv("/bin/httpd", args);
        perror("nginx: exec /bin/httpd");
        _exit(127);
    }
    fprintf(stderr, "nginx: master %d serving %s on port %s (worker %d)\n",
            (int)getpid(), root, port, (int)worker);

    int status = 0;
    while (waitpid(worker, &status, 0) < 0) {
        if (errno != EINTR) {
            perror("nginx: waitpid");
            return 1;
        }
    }
    unlink(PIDFILE);
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return WEXITSTATUS(status);
}
