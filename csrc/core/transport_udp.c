/*
 * transport_udp.c - datagram listeners. One socket per listen address
 * serves both directions. ICMP errors (IP_RECVERR) come back with the
 * datagram we sent, so the transaction it belongs to fails at once
 * instead of waiting for Timer F.
 */
#define _GNU_SOURCE
#include "core.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/errqueue.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>


static void udp_errqueue(struct sip_listener *l)
{
	char data[65536], ctrl[512];
	struct sockaddr_storage ss;
	struct iovec iov = { data, sizeof data };
	struct msghdr mh;
	struct cmsghdr *cm;
	ssize_t n;

	for (;;) {
		memset(&mh, 0, sizeof mh);
		mh.msg_name = &ss;
		mh.msg_namelen = sizeof ss;
		mh.msg_iov = &iov;
		mh.msg_iovlen = 1;
		mh.msg_control = ctrl;
		mh.msg_controllen = sizeof ctrl;
		n = recvmsg(l->fd, &mh, MSG_ERRQUEUE | MSG_DONTWAIT);
		if (n < 0)
			return;
		for (cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
			struct sock_extended_err *ee;
			if (!((cm->cmsg_level == SOL_IP && cm->cmsg_type == IP_RECVERR) ||
			      (cm->cmsg_level == SOL_IPV6 && cm->cmsg_type == IPV6_RECVERR)))
				continue;
			ee = (struct sock_extended_err *)CMSG_DATA(cm);
			char why[96];
			sip_transport_error(why, sizeof why, (int)ee->ee_errno);
			sip_ua_icmp_error(l->ua, data, (size_t)n, why);
		}
	}
}

static void udp_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct sip_listener *l = w->data;
	char buf[65536];
	struct sip_addr src;
	int i;

	(void)loop;
	(void)revents;
	/* a bounded batch per wakeup keeps other watchers served under load */
	for (i = 0; i < 64; i++) {
		ssize_t n;
		src.len = sizeof src.ss;
		n = recvfrom(l->fd, buf, sizeof buf, 0, (struct sockaddr *)&src.ss, &src.len);
		if (n < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				/* woken with nothing to read: only the error queue
				 * is pending, and epoll reports it until drained */
				if (i == 0)
					udp_errqueue(l);
				return;
			}
			if (errno == EINTR)
				continue;
			/* a pending ICMP error surfaces as ECONNREFUSED and friends */
			udp_errqueue(l);
			continue;
		}
		if ((size_t)n > l->ua->cfg.max_udp) {
			sip_ua_drop(l->ua, &src, "datagram larger than max_udp");
			continue;
		}
		sip_ua_receive(l->ua, SIP_UDP, l, NULL, &src, buf, (size_t)n);
	}
}

int sip_udp_open(struct sip_listener *l, char *err, size_t errlen)
{
	int fd, on = 1;
	socklen_t alen;

	fd = socket(l->addr.ss.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		goto fail;
	if (l->addr.ss.ss_family == AF_INET6) {
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof on);
		setsockopt(fd, SOL_IPV6, IPV6_RECVERR, &on, sizeof on);
	} else {
		setsockopt(fd, SOL_IP, IP_RECVERR, &on, sizeof on);
	}
	{
		/* a few MiB of receive buffer ride out the loop's pauses at
		 * thousands of calls a second (the kernel caps it at rmem_max
		 * unless we may force it) */
		int sz = 4 << 20;
		if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &sz, sizeof sz) < 0)
			setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
	}
	if (bind(fd, (struct sockaddr *)&l->addr.ss, l->addr.len) < 0)
		goto fail;
	alen = sizeof l->addr.ss;
	getsockname(fd, (struct sockaddr *)&l->addr.ss, &alen);
	l->addr.len = alen;
	l->fd = fd;
	ev_io_init(&l->io, udp_cb, fd, EV_READ);
	l->io.data = l;
	ev_io_start(l->ua->env->loop, &l->io);
	ev_unref(l->ua->env->loop);     /* a socket alone does not keep sip.run alive */
	return 0;
fail:
	snprintf(err, errlen, "%s", strerror(errno));
	if (fd >= 0)
		close(fd);
	return -errno;
}

void sip_udp_close(struct sip_listener *l)
{
	if (l->fd < 0)
		return;
	ev_ref(l->ua->env->loop);
	ev_io_stop(l->ua->env->loop, &l->io);
	close(l->fd);
	l->fd = -1;
}

int sip_udp_send(struct sip_listener *l, const struct sip_addr *dst, const char *buf, size_t len)
{
	ssize_t n = sendto(l->fd, buf, len, 0, (const struct sockaddr *)&dst->ss, dst->len);

	if (n < 0) {
		int e = errno;
		if (e == ECONNREFUSED || e == EHOSTUNREACH || e == ENETUNREACH) {
			/* an earlier ICMP error was reported on this send; retry once */
			n = sendto(l->fd, buf, len, 0, (const struct sockaddr *)&dst->ss, dst->len);
			if (n >= 0)
				goto ok;
			e = errno;
		}
		return -e;
	}
ok:
	l->ua->tx++;
	sip_ua_trace(l->ua, 1, SIP_UDP, dst, buf, len);
	return 0;
}
