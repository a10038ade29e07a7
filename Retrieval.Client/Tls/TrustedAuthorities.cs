using System;
using System.IO;
using System.Linq;
using System.Net.Security;
using System.Security.Cryptography.X509Certificates;

namespace Retrieval.Tls;

/// <summary>
/// Certificate authorities read from a PEM file (one or more <c>BEGIN CERTIFICATE</c> blocks), and the checks that a
/// server's certificate chains up to one of them and names the host, or that a client's chains up to one of them, for
/// TLS between services whose certificates a private authority issued. Only these authorities are trusted, not the
/// system's; a certificate that lists its purposes must list the one it is used for; revocation is not checked (private
/// authorities seldom publish lists, and a service must not stop answering because one cannot be fetched).
/// This file is compiled into the client library and into the services.
/// </summary>
internal sealed class TrustedAuthorities
{
    private readonly X509Certificate2Collection _authorities;

    private TrustedAuthorities(X509Certificate2Collection authorities) => _authorities = authorities;

    /// <summary>Reads the authorities from <paramref name="path"/>; the message of the exception says what is wrong with it.</summary>
    /// <exception cref="ArgumentException">The file is missing, unreadable, or holds no certificate.</exception>
    public static TrustedAuthorities Load(string path)
    {
        string pem;
        try
        {
            pem = File.ReadAllText(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException or NotSupportedException)
        {
            throw new ArgumentException($"cannot read the certificate authorities file '{path}': {e.Message}", e);
        }
        const string Begin = "-----BEGIN CERTIFICATE-----", End = "-----END CERTIFICATE-----";
        var authorities = new X509Certificate2Collection();
        int start = 0;
        while ((start = pem.IndexOf(Begin, start, StringComparison.Ordinal)) >= 0)
        {
            int end = pem.IndexOf(End, start, StringComparison.Ordinal);
            if (end < 0)
            {
                throw new ArgumentException($"the certificate authorities file '{path}' has a certificate without its END line");
            }
            var base64 = pem.Substring(start + Begin.Length, end - start - Begin.Length);
            try
            {
                authorities.Add(Certificate(Convert.FromBase64String(base64)));
            }
            catch (Exception e) when (e is FormatException or System.Security.Cryptography.CryptographicException)
            {
                throw new ArgumentException($"the certificate authorities file '{path}' holds a damaged certificate: {e.Message}", e);
            }
            start = end + End.Length;
        }
        if (authorities.Count == 0)
        {
            throw new ArgumentException($"the certificate authorities file '{path}' holds no PEM certificate (-----BEGIN CERTIFICATE-----)");
        }
        return new TrustedAuthorities(authorities);
    }

    /// <summary>
    /// A TLS client's check of the server's certificate (<c>RemoteCertificateValidationCallback</c>): true when it
    /// names the host and chains, through any intermediates the server sent, to one of these authorities.
    /// </summary>
    public bool ValidateServer(X509Certificate? certificate, X509Chain? sent, SslPolicyErrors errors) =>
        Validate(certificate, sent, errors, ServerAuthentication);

    /// <summary>A TLS server's check of a client's certificate: true when it chains to one of these authorities.</summary>
    public bool ValidateClient(X509Certificate? certificate, X509Chain? sent, SslPolicyErrors errors) =>
        Validate(certificate, sent, errors, ClientAuthentication);

    private const string ServerAuthentication = "1.3.6.1.5.5.7.3.1", ClientAuthentication = "1.3.6.1.5.5.7.3.2";

    private bool Validate(X509Certificate? certificate, X509Chain? sent, SslPolicyErrors errors, string purpose)
    {
        // A name that does not match, or no certificate at all, fails whoever issued it.
        if (certificate is null || (errors & ~SslPolicyErrors.RemoteCertificateChainErrors) != SslPolicyErrors.None)
        {
            return false;
        }
        using var chain = new X509Chain();
        chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
        chain.ChainPolicy.ApplicationPolicy.Add(new System.Security.Cryptography.Oid(purpose));
        foreach (var element in sent?.ChainElements.Cast<X509ChainElement>().Skip(1) ?? [])
        {
            chain.ChainPolicy.ExtraStore.Add(element.Certificate);
        }
        var leaf = certificate as X509Certificate2 ?? new X509Certificate2(certificate);
#if NET5_0_OR_GREATER
        chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        chain.ChainPolicy.CustomTrustStore.AddRange(_authorities);
        return chain.Build(leaf);
#else
        // No custom root store before .NET 5: build with these authorities as extra certificates, accept an unknown
        // root only, and require that root to be one of them.
        chain.ChainPolicy.ExtraStore.AddRange(_authorities);
        chain.ChainPolicy.VerificationFlags = X509VerificationFlags.AllowUnknownCertificateAuthority;
        if (!chain.Build(leaf) || chain.ChainStatus.Any(s => s.Status is not (X509ChainStatusFlags.NoError or X509ChainStatusFlags.UntrustedRoot)))
        {
            return false;
        }
        var root = chain.ChainElements[chain.ChainElements.Count - 1].Certificate;
        return _authorities.Cast<X509Certificate2>().Any(a => a.Thumbprint == root.Thumbprint);
#endif
    }

    private static X509Certificate2 Certificate(byte[] der)
    {
#if NET9_0_OR_GREATER
        return X509CertificateLoader.LoadCertificate(der);
#else
        return new X509Certificate2(der);
#endif
    }
}
