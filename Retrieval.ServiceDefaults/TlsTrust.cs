using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Retrieval.Tls;

namespace Retrieval.ServiceDefaults;

/// <summary>
/// TLS between the services when a private authority issued their certificates: the authorities come from a PEM file,
/// and only they are trusted (see <see cref="TrustedAuthorities"/>); a client certificate comes from PEM files.
/// </summary>
public static class TlsTrust
{
    /// <summary>Makes <paramref name="handler"/> accept only server certificates issued by the authorities in <paramref name="caPath"/>.</summary>
    /// <exception cref="ArgumentException">The file is missing, unreadable, or holds no certificate.</exception>
    public static void TrustOnly(SocketsHttpHandler handler, string caPath)
    {
        var trusted = TrustedAuthorities.Load(caPath);
        handler.SslOptions.RemoteCertificateValidationCallback = (_, certificate, chain, errors) => trusted.ValidateServer(certificate, chain, errors);
    }

    /// <summary>Makes <paramref name="handler"/> present the certificate in <paramref name="certificatePath"/> (PEM) with its key.</summary>
    /// <exception cref="ArgumentException">Either file is missing or unreadable, or the key is not the certificate's.</exception>
    public static void PresentCertificate(SocketsHttpHandler handler, string certificatePath, string keyPath) =>
        handler.SslOptions.ClientCertificates = [LoadCertificate(certificatePath, keyPath)];

    /// <summary>A certificate and its private key from PEM files, usable to authenticate a TLS connection on every platform.</summary>
    /// <exception cref="ArgumentException">Either file is missing or unreadable, or the key is not the certificate's.</exception>
    private static X509Certificate2 LoadCertificate(string certificatePath, string keyPath)
    {
        try
        {
            using var pem = X509Certificate2.CreateFromPemFile(certificatePath, keyPath);
            // A key read from PEM is ephemeral, which Windows' TLS cannot use; a PKCS#12 round trip gives it a stored one.
            return X509CertificateLoader.LoadPkcs12(pem.Export(X509ContentType.Pkcs12), null);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or CryptographicException or ArgumentException)
        {
            throw new ArgumentException($"cannot load the certificate '{certificatePath}' with the key '{keyPath}': {e.Message}", e);
        }
    }

    /// <summary>Null when <paramref name="caPath"/> holds at least one readable certificate, else what is wrong with it.</summary>
    public static string? Problem(string caPath) => Problem(() => TrustedAuthorities.Load(caPath));

    /// <summary>Null when the certificate and key load, else what is wrong with them.</summary>
    public static string? Problem(string certificatePath, string keyPath) => Problem(() => LoadCertificate(certificatePath, keyPath).Dispose());

    private static string? Problem(Action load)
    {
        try
        {
            load();
            return null;
        }
        catch (ArgumentException e)
        {
            return e.Message;
        }
    }
}
