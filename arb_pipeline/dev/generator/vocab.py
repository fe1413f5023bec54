"""Fixed vocabulary of the generator: the 35 events, levels, score events and Spanish words.

Constant tables rather than seeded draws: the real app loads the same events.csv on every
server, and fixed text keeps the reference data identical across seeds where it should be.
"""

from __future__ import annotations

# (name, category, origin, eventType, lifespam minutes, description or None)
EVENTS: tuple[tuple[str, str, str, str, int, str | None], ...] = (
    ("Bus lleno", "estado bus", "i", "bus", 30, "El bus va lleno, no caben más pasajeros"),
    ("Chofer maneja mal", "conducción", "i", "bus", 30, None),
    ("Exceso de velocidad", "conducción", "i", "bus", 20, "El bus va más rápido de lo permitido"),
    ("No se detuvo en paradero", "conducción", "o", "bus", 15, None),
    ("Bus sucio", "estado bus", "i", "bus", 120, None),
    ("Bus en panne", "estado bus", "o", "bus", 60, "El bus quedó detenido por una falla"),
    ("Desvío de recorrido", "servicio", "i", "bus", 45, None),
    ("Buena atención del chofer", "servicio", "i", "bus", 30, None),
    ("Aire acondicionado apagado", "estado bus", "i", "bus", 90, None),
    ("Asientos rotos", "estado bus", "i", "bus", 1440, "Hay asientos en mal estado"),
    ("Calefacción encendida", "estado bus", "i", "bus", 90, None),
    ("Evasión masiva", "seguridad", "i", "bus", 10, None),
    ("Validador no funciona", "pago", "i", "bus", 240, "El validador bip! no responde"),
    ("Bus con wifi", "servicio", "i", "bus", 1440, None),
    ("Bus limpio", "estado bus", "i", "bus", 120, None),
    ("Música muy alta", "convivencia", "i", "bus", 20, None),
    ("Puerta no abre", "estado bus", "i", "bus", 60, None),
    ("Bus accidentado", "seguridad", "o", "bus", 180, "El bus tuvo un accidente"),
    ("Bus no para en ruta", "servicio", "o", "bus", 15, None),
    ("Pasajero ebrio", "seguridad", "i", "bus", 15, None),
    ("Paradero sin techo", "infraestructura", "o", "busStop", 129600, None),
    ("Paradero lleno", "demanda", "o", "busStop", 15, "Mucha gente esperando"),
    ("Paradero sin luz", "infraestructura", "o", "busStop", 4320, None),
    ("Asalto en paradero", "seguridad", "o", "busStop", 60, "Robo o asalto reportado"),
    ("Paradero en mal estado", "infraestructura", "o", "busStop", 10080, None),
    ("Falta información", "información", "o", "busStop", 10080, "No hay información de recorridos"),
    ("Paradero con basura", "limpieza", "o", "busStop", 1440, None),
    ("Pantalla no funciona", "información", "o", "busStop", 2880, None),
    ("Mucho tiempo de espera", "demanda", "o", "busStop", 30, None),
    ("Paradero inundado", "infraestructura", "o", "busStop", 360, None),
    ("Comercio ambulante", "convivencia", "o", "busStop", 120, None),
    ("Paradero cerrado", "servicio", "o", "busStop", 1440, "El paradero no está operativo"),
    ("Paradero bien mantenido", "infraestructura", "o", "busStop", 10080, None),
    ("Obras en el paradero", "infraestructura", "o", "busStop", 20160, None),
    ("Paradero vandalizado", "seguridad", "o", "busStop", 4320, "Vidrios rotos o rayados"),
)
assert len(EVENTS) == 35

LEVELS = (
    ("Pasajero novato", 0, 100), ("Pasajero frecuente", 100, 500), ("Viajero urbano", 500, 1500),
    ("Conocedor de rutas", 1500, 4000), ("Guía del paradero", 4000, 10000),
    ("Experto en micros", 10000, 25000), ("Leyenda del Transantiago", 25000, 1e9),
)

STREETS = (
    "Alameda", "Providencia", "Vicuña Mackenna", "Gran Avenida", "Pajaritos", "Recoleta",
    "Independencia", "Irarrázaval", "Apoquindo", "Las Condes", "Santa Rosa", "La Florida",
    "Departamental", "Américo Vespucio", "Tobalaba", "Los Leones", "Pedro de Valdivia", "Macul",
    "Grecia", "Matta", "Ñuble", "San Pablo", "Mapocho", "Manuel Montt", "Los Pajaritos",
    "Vitacura", "Kennedy", "La Cisterna", "Lo Espejo", "Ossa", "Quilín", "Las Torres",
    "Av. Central", "El Salto", "Dorsal", "Cerro Navia", "Teniente Cruz", "José Joaquín Pérez",
)

COMUNAS = (
    "Maipú", "Las Condes", "Puente Alto", "La Florida", "Estación Central", "Pudahuel",
    "Quilicura", "Renca", "Peñalolén", "Vitacura", "Lo Barnechea", "San Bernardo", "Cerrillos",
    "La Pintana", "El Bosque", "Recoleta", "Independencia", "Ñuñoa", "Providencia",
    "Santiago Centro", "Huechuraba", "Conchalí", "La Reina", "Macul", "San Miguel",
)

FIRST_NAMES = ("María", "José", "Camila", "Matías", "Valentina", "Benjamín", "Sofía", "Tomás",
               "Francisca", "Ignacio", "Javiera", "Sebastián", "Constanza", "Joaquín", "Catalina",
               "Diego", "Fernanda", "Felipe", "Antonia", "Nicolás")
LAST_NAMES = ("González", "Muñoz", "Rojas", "Díaz", "Pérez", "Soto", "Contreras", "Silva",
              "Martínez", "Sepúlveda", "Morales", "Rodríguez", "López", "Fuentes", "Hernández",
              "Torres", "Araya", "Flores", "Espinoza", "Valenzuela")
MAIL_DOMAINS = ("gmail.com", "hotmail.com", "yahoo.es", "outlook.cl", "uchile.cl", "live.cl")

# Report messages: unicode, quotes, newlines, tabs and backslashes all occur in real input.
MESSAGE_PARTS = (
    "El bus no se detuvo", "Chofer muy amable 👍", "Paradero sin techo, llueve mucho ☔",
    "La micro venía llena", "Mucha espera… más de 20 minutos", "Ojo: asalto en la esquina",
    "Línea 506 desviada por obras", "Señor \"conductor\" habla por teléfono",
    "ruta C:\\Users\\pasajero\\foto", "niño perdido en el bus 😢", "¿Alguien sabe qué pasó?",
    "Árbol caído en la vía", "validador malo\tno cobra", "gracias TranSapp!!!", "Ñandú en la vía (?)",
    "backslash \\n no es salto", "emoji 🚌🚏 y más", "texto con 'comillas' simples",
)

# File extensions of report images, in the mixed cases the clients send.
IMAGE_EXTENSIONS = ("jpeg", "jpg", "png", "JPG", "JPEG", "PNG", "Jpg", "Png", "jpG", "JPeg")
